"""C-GANs face aging (arXiv 1802.00237) on the ProcAging benchmark."""
