"""stablediffusionapi / ModelsLab dialect: /api/v3/* and the v6 image routes of modelslab_py."""
