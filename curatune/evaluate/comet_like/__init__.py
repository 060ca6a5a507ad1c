"""The comet_like metric as a local Hugging Face ``evaluate`` module.

``evaluate.load(str(MODULE_DIR))`` loads it offline (the folder holds ``comet_like.py``).
"""
from pathlib import Path

#: Pass this folder to ``evaluate.load``.
MODULE_DIR = Path(__file__).resolve().parent
