"""HTTP layer: FastAPI app assembly and the API dialects. Translates wire formats into
GenerationParams and renders domain errors in each dialect's shape."""
