"""Ultra-Sparse Memory Network (UltraMem, arXiv 2411.12364) with PKM, MoE and dense baselines."""
