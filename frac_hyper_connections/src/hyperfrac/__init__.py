"""hyperfrac package."""
