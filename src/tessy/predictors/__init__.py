"""Boundary predictors: `lexicon` (rules, no training, the default) and `classifier` (any
Hugging Face token-classification checkpoint). `load_predictor(spec)` picks one by name/path."""
