"""Typed settings: one source for environment variables (SDSERVE_*), the TOML config file
and the CLI flags. Each field's description is its documentation (``sdserve serve --help``
and the README's config reference are generated from the same text)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = ["Settings", "UserModel", "load_settings"]


class UserModel(BaseModel):
    """A model the user adds in the config file under ``[[models]]``."""

    id: str = Field(description="Id clients send as `model` (any string, e.g. 'my-dreamshaper').")
    source: str = Field(
        description="Hub repo id 'org/name', a local diffusers folder, or a single .safetensors/.ckpt file."
    )
    arch: Literal["sd15", "sdxl"] = Field("sd15", description="Model family: sd15 or sdxl.")
    aliases: list[str] = Field(default_factory=list, description="Other names clients may use.")
    description: str = ""
    width: int | None = Field(None, description="Default width; the family's native size if unset.")
    height: int | None = Field(None, description="Default height; the family's native size if unset.")
    steps: int | None = Field(None, description="Default number of denoising steps.")
    guidance: float | None = Field(None, description="Default CFG scale.")
    scheduler: str | None = Field(None, description="Default scheduler name (see `sdserve models --schedulers`).")
    inpaint_only: bool = Field(False, description="True for inpainting checkpoints (9-channel UNet).")
    loras: dict[str, float] = Field(default_factory=dict, description="LoRAs baked into this id, name -> weight "
                                    "(files in models/Lora), e.g. {add_detail = 0.7}; requests may add more.")


class Settings(BaseSettings):
    """sdserve's settings. Precedence: CLI flags > environment (SDSERVE_*) > config file > defaults."""

    model_config = SettingsConfigDict(env_prefix="SDSERVE_", extra="forbid", validate_default=True)

    host: str = Field("127.0.0.1", description="Address to bind. Keyless servers should stay on loopback.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on.")
    data_dir: Path = Field(Path("data"), description="Where the job database, outputs and demo models live.")
    demo: bool = Field(
        False,
        description="Serve every catalog id with tiny random-weight models (outputs are noise). For trying the API.",
    )
    device: str = Field("auto", description="'auto' (CUDA if present, else CPU), 'cpu', 'cuda' or 'cuda:N'.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="'auto': bf16/fp16 on CUDA; on CPU bf16 where native (AVX-512 BF16/AMX), else float32."
    )
    # -- engine: model memory, batching and speed (engine.memory, engine.fastpaths) --
    max_loaded_models: int = Field(4, ge=1, description="Most models kept loaded at once (within model_memory_gb).")
    model_memory_gb: float = Field(
        0.0, ge=0, description="Memory the loaded models' weights may take (GPU memory on CUDA, RAM on CPU); the "
        "least recently used models unload to make room. 0: 75% of GPU memory, 50% of RAM.",
    )
    max_batch_images: int = Field(
        8, ge=1, description="Most images in one denoising loop (compatible requests run together); free memory "
        "may allow fewer.",
    )
    batch_wait_ms: float = Field(
        5.0, ge=0, le=1000, description="How long a job waits for compatible company when requests are arriving "
        "concurrently (a lone sequential client never waits).",
    )
    threads: int = Field(0, ge=0, description="CPU threads torch uses; 0: every core.")
    channels_last: Literal["auto", "on", "off"] = Field(
        "auto", description="NHWC convolutions. 'auto': on (measured on the CPU: VAE decode 18% faster, UNet "
        "unchanged).")
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = Field(
        "off", description="torch.compile the UNet with this mode ('reduce-overhead' adds CUDA graphs); the model's "
        "default size compiles at load, other sizes on first use.",
    )
    vae_tiling: Literal["auto", "on", "off"] = Field(
        "auto", description="Decode in tiles; 'auto': only above 1536x1536 pixels, where a whole decode needs "
        "too much memory.",
    )
    sdxl_vae: str | None = Field(
        None, description="fp16-safe VAE for SDXL-family models in float16 (hub repo or folder, e.g. "
        "madebyollin/sdxl-vae-fp16-fix); without it their VAE decodes in float32.",
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Static bearer tokens accepted by every route. Empty means the server is open.",
    )
    max_body_mb: float = Field(
        50.0, gt=0, description="Largest request body accepted, in MiB (Workers AI images are JSON byte arrays)."
    )
    max_image_pixels: int = Field(
        4096 * 4096, gt=0, description="Largest decoded input image, in pixels; checked before decoding."
    )
    max_queue: int = Field(256, ge=1, description="Most jobs waiting at once; more get 503 with Retry-After.")
    # -- per-request limits (docs/jobs.md, "Limits"); a key's own limits narrow these --
    request_max_steps: int | None = Field(
        200, ge=1, description="Most denoising steps one request may ask for (unset: only the engine's 1-200).")
    request_max_side: int | None = Field(
        4096, ge=64, description="Largest width or height of a requested image, in pixels.")
    request_max_pixels: int | None = Field(
        4096 * 4096, ge=4096, description="Largest width x height of a requested image.")
    request_max_images: int | None = Field(
        1600, ge=1, description="Most images one request may ask for, over all its batches (A1111: batch_size x "
        "n_iter, at most 16 x 100).")
    request_max_cost: float | None = Field(
        None, gt=0, description="Most compute units one request may cost (one unit: one SD 1.5 UNet evaluation "
        "at 512x512; see docs/jobs.md). Unset: no limit.")
    models: list[UserModel] = Field(default_factory=list, description="Models added in the config file.")
    default_model: str = Field(
        "@cf/runwayml/stable-diffusion-v1-5-img2img",
        description="Catalog id or alias used where a dialect names no sdserve model: OpenAI's dall-e-2, "
        "dall-e-3 and gpt-image-* names (and requests without `model`), and A1111's initial sd_model_checkpoint.",
    )
    openai_error_types: Literal["openai", "gateway"] = Field(
        "openai", description="Error `type` vocabulary of the OpenAI dialect (/v1/images, /v1/models): 'openai' "
        "(OpenAI's own: invalid_request_error, insufficient_quota, ...) or 'gateway' (OpenAI-compatible "
        "gateways' such as aigateway.sh: authentication_error, insufficient_credits, not_found, "
        "rate_limit_error, ...). Statuses are the same either way.",
    )
    config_file: Path | None = Field(None, description="TOML file with these settings (and [[models]]).")
    # -- job service (store, outputs, webhooks, outbound URLs) --
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the job database, e.g. postgresql+psycopg://user:pw@host/sdserve. "
        "Default: SQLite (WAL) at DATA_DIR/sdserve.db.",
    )
    max_attempts: int = Field(
        3, ge=1, description="Times a job may be started; a job interrupted by a crash is re-queued until then."
    )
    preview_every: int = Field(5, ge=0, description="Attach a preview image to every k-th step event (0: never).")
    outputs_backend: Literal["local", "s3"] = Field("local", description="Where outputs are kept: 'local' or 's3'.")
    outputs_dir: Path | None = Field(None, description="Local output directory. Default: DATA_DIR/outputs.")
    # -- add-on files (engine.addon_files): A1111's models/ layout --
    models_dir: Path | None = Field(
        None, description="Folder with A1111's layout of add-on files (Lora/, embeddings/, VAE/, ESRGAN/, "
        "ControlNet/, Stable-diffusion/, ...). Default: DATA_DIR/models; an A1111 install's models folder works as is.",
    )
    model_dirs: dict[str, list[Path]] = Field(
        default_factory=dict, description="Folders per add-on kind, replacing that kind's folders under models_dir "
        "(kinds: checkpoint, lora, embedding, vae, upscaler, face_restorer, controlnet, ip_adapter), e.g. "
        "{lora = ['/a1111/models/Lora']}.",
    )
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, R2, ...); unset for AWS.")
    s3_bucket: str | None = Field(None, description="Bucket for outputs when outputs_backend is 's3'.")
    s3_prefix: str = Field("sdserve/", description="Key prefix for outputs in the bucket.")
    s3_region: str | None = Field(None, description="S3 region (boto3's default chain if unset).")
    s3_access_key_id: str | None = Field(None, description="S3 access key id (boto3's default chain if unset).")
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret key (boto3's default chain if unset).")
    s3_presign: bool = Field(
        False, description="Link outputs as presigned S3 URLs (expiring after output_url_ttl_s) instead of via this server."
    )
    output_url_ttl_s: int = Field(3600, ge=1, description="Lifetime of presigned output URLs, in seconds.")
    output_retention_hours: float = Field(
        168.0, ge=0, description="Delete outputs this many hours after they are made (0: keep forever)."
    )
    public_url: str | None = Field(
        None, description="Base URL clients reach this server at, for output links (default: the request's own)."
    )
    allow_private_urls: bool = Field(
        False,
        description="Let outbound URLs (webhooks, init images) reach loopback and private addresses. "
        "Only for local setups and tests: it opens the server to SSRF.",
    )
    fetch_timeout_s: float = Field(15.0, gt=0, description="Time limit for one outbound request, in seconds.")
    fetch_max_mb: float = Field(20.0, gt=0, description="Largest outbound response accepted, in MiB.")
    webhook_max_attempts: int = Field(10, ge=1, description="Delivery attempts per webhook before it is given up.")
    webhook_retry_base_s: float = Field(
        5.0, gt=0, description="Delay before the first webhook retry; each further retry doubles it (with jitter)."
    )
    modelslab_wait_s: float = Field(
        5.0, ge=0, description="How long a ModelsLab (/api/v3, /api/v6) generation call waits for its job: "
        "finished by then it answers 'success', else 'processing' with a fetch_result URL (0: always 'processing')."
    )
    # -- auxiliary models: safety checker, prompt enhancer, captioner (docs/safety.md) --
    safety_checker: Literal["off", "request", "always"] = Field(
        "request", description="Safety checker policy for every dialect: 'off' (requests asking for it are "
        "refused), 'request' (runs when a request asks), 'always' (every image is checked; a client cannot turn "
        "it off). Flagged images are obscured and flagged per output.",
    )
    safety_checker_model: str = Field(
        "CompVis/stable-diffusion-safety-checker", description="The safety checker's weights (hub repo or "
        "folder; `sdserve pull safety-checker`). Empty: none.",
    )
    enhancer_model: str = Field(
        "Gustavosta/MagicPrompt-Stable-Diffusion", description="Prompt enhancer: a causal language model that "
        "extends prompts (hub repo or folder; `sdserve pull enhancer`). Empty: none.",
    )
    captioner_model: str = Field(
        "Salesforce/blip-image-captioning-base", description="Image captioner: a BLIP captioning model (hub "
        "repo or folder; `sdserve pull captioner`). Empty: none.",
    )
    # -- ControlNet annotators: the depth and pose preprocessors' models (docs/controlnet.md) --
    depth_model: str = Field(
        "depth-anything/Depth-Anything-V2-Small-hf", description="Depth estimator of the depth_anything_v2 "
        "preprocessor (a transformers depth-estimation model: hub repo or folder; `sdserve pull depth`). Empty: none.",
    )
    depth_midas_model: str = Field(
        "Intel/dpt-hybrid-midas", description="Depth estimator of the depth_midas preprocessor (DPT-hybrid MiDaS: "
        "hub repo or folder; `sdserve pull depth-midas`). Empty: none.",
    )
    pose_model: str = Field(
        "usyd-community/vitpose-base-simple", description="Pose estimator of the openpose preprocessor (ViTPose: "
        "hub repo or folder; `sdserve pull pose`). Empty: none.",
    )
    person_detector_model: str = Field(
        "PekingU/rtdetr_r50vd_coco_o365", description="Person detector that finds the people the openpose "
        "preprocessor poses (a transformers object detector: hub repo or folder; `sdserve pull person-detector`). "
        "Empty: none.",
    )
    enhance_prompt_dialects: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Dialects whose prompts always go through the enhancer (today: "
        "'openai', whose replies then carry revised_prompt). Comma-separated in the environment.",
    )
    # -- scale-out: Ray Serve (`sdserve serve --ray ADDRESS`, `serve run sdserve.deploy.ray:app`) --
    job_lease_s: float = Field(
        30.0, ge=3, description="Lease of a running job: its worker renews it every lease/6 seconds; a job whose "
        "lease lapses (its process died) is queued again by any server sharing the database.",
    )
    ray_address: str | None = Field(
        None, description="Ray cluster to serve on instead of one process: 'auto' (the cluster this machine "
        "joined), 'HEAD:6379', 'ray://HEAD:10001', or 'local' (start Ray here). See docs/deployment.md.",
    )
    ray_api_replicas: int = Field(2, ge=1, description="HTTP API replicas (each a job service over the shared database).")
    ray_api_num_cpus: float = Field(0.5, gt=0, description="CPUs Ray reserves for each API replica.")
    ray_batches_in_flight: int = Field(
        2, ge=1, description="Batches each API replica keeps running on model replicas at once; "
        "ray_api_replicas x this bounds how many model replicas can be kept busy.",
    )
    ray_model_min_replicas: int = Field(1, ge=0, description="Fewest model replicas (autoscaling lower bound).")
    ray_model_max_replicas: int = Field(1, ge=1, description="Most model replicas (autoscaling upper bound).")
    ray_model_num_gpus: float = Field(
        1.0, ge=0, description="GPUs per model replica (fractions share a GPU; 0 for CPU replicas).")
    ray_model_num_cpus: float = Field(
        1.0, gt=0, description="CPUs per model replica; on CPU replicas also torch's thread count (rounded up).")
    ray_model_max_ongoing_requests: int = Field(
        2, ge=1, description="Batches queued at one model replica at once (one runs, the rest wait their turn).")
    # -- exposure: what answers without a key, and to which browser origins --
    metrics_public: bool = Field(
        True, description="Serve /metrics without an API key (Prometheus scrapers usually have none). "
        "False: /metrics needs a key like every other route."
    )
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins (e.g. https://app.example.com) allowed to call the API from their pages. "
        "Empty (default): no cross-origin access. '*' allows any origin.",
    )

    @field_validator("api_keys", "cors_allow_origins", "enhance_prompt_dialects", mode="before")
    @classmethod
    def _split_keys(cls, v: Any) -> Any:
        # SDSERVE_API_KEYS=a,b is friendlier than a JSON list in an environment variable; the
        # field is NoDecode so the env source hands the raw string here instead of failing on it.
        if isinstance(v, str):
            if v.lstrip().startswith("["):
                return json.loads(v)
            return [k.strip() for k in v.split(",") if k.strip()]
        return v

    @model_validator(mode="after")
    def _check(self) -> Settings:
        ids = [m.id for m in self.models]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"models: id(s) {sorted(dup)} appear more than once in [[models]]; give each a unique id")
        if self.outputs_backend == "s3" and not self.s3_bucket:
            raise ValueError("outputs_backend is 's3' but s3_bucket is not set; set SDSERVE_S3_BUCKET (or use 'local')")
        return self

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def addon_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def demo_dir(self) -> Path:
        return self.data_dir / "demo-models"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from the TOML file (if any), then SDSERVE_* env, then ``overrides``.

    ``overrides`` are CLI flags; ``None`` values mean "flag not given" and are dropped.
    """
    import os

    path = config_file or (Path(os.environ["SDSERVE_CONFIG_FILE"]) if os.environ.get("SDSERVE_CONFIG_FILE") else None)
    file_values: dict[str, Any] = {}
    if path is not None:
        try:
            file_values = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ValueError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"config file {path} is not valid TOML: {e}") from None
        file_values["config_file"] = path
    env = Settings.model_validate({})  # env + defaults, to know which fields env set
    env_set = {k: getattr(env, k) for k in env.model_fields_set}
    merged = {**file_values, **env_set, **{k: v for k, v in overrides.items() if v is not None}}
    return Settings.model_validate(merged)
