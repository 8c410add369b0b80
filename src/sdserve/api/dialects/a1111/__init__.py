"""AUTOMATIC1111 stable-diffusion-webui dialect: /sdapi/v1/* (reference §4)."""
