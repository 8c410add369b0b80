"""sdserve's own job API: /v1/jobs with Server-Sent Events progress, and /v1/outputs."""
