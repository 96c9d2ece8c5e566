"""Views by area: datasets (generation), training (models, reports), guard (playground, API)."""
