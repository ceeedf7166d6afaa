__version__ = "0.1.0"

import os as _os
# Offline first: huggingface_hub reads this when it is first imported (timm imports it).
_os.environ.setdefault("HF_HUB_OFFLINE", "1")
