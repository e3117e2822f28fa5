"""The LLM gateway component.

litellm reads its settings from the environment at import time: before any module of this
package can import it, make it use its bundled price table (no fetch from GitHub), ignore `.env`
files, never ask the Hugging Face hub for tokenizers and send no telemetry. An operator's own
values win (setdefault).
"""

import os

for _name, _value in (
    ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
    ("LITELLM_MODE", "PRODUCTION"),
    ("HF_HUB_OFFLINE", "1"),
    ("LITELLM_TELEMETRY", "False"),
):
    os.environ.setdefault(_name, _value)
