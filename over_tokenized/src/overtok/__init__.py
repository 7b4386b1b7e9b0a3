"""Over-Tokenized Transformers (arXiv 2501.16975): Over-Encoding, Over-Decoding (MTP-DS) and OT."""
