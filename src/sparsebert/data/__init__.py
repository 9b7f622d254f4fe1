"""Data: pretraining corpus (`corpus`), WordPiece tokenizer (`tokenizer`), MLM+NSP examples (`pretraining`),
downstream task loaders and proxy tasks."""
