"""Cross-domain human parsing (arXiv 1801.01260) on the ProcParse benchmark."""
