"""The LLM gateway component.

litellm reads its settings from the environment at import time: before any module of this
package can import it, make it use its bundled price table (no fetch from GitHub), ignore `.env`
files, never ask the Hugging Face hub for tokenizers and send no telemetry (nor onnxruntime).
An operator's own values win (setdefault).
"""

import os
import warnings

for _name, _value in (
    ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
    ("LITELLM_MODE", "PRODUCTION"),
    ("HF_HUB_OFFLINE", "1"),
    ("LITELLM_TELEMETRY", "False"),
    # onnxruntime (the local embedding model) otherwise writes a device id under $HOME.
    ("ORT_DISABLE_TELEMETRY", "1"),
):
    os.environ.setdefault(_name, _value)

# litellm's TypedDicts make pydantic warn (one line per type, ~20 at import) about a qualifier
# pydantic does not enforce; they are litellm's, not the operator's to act on.
warnings.filterwarnings(
    "ignore", message=r".*the `ReadOnly` qualifier", category=UserWarning, module=r"pydantic\."
)
