"""Custom transformers pipelines, registered with PIPELINE_REGISTRY on import (pipeline issue)."""
