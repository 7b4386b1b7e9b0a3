"""UGAN (arXiv 1907.11418) on a StarGAN core, with the ProcFace source-retention benchmark."""
