"""Which model is live: the champion, chosen by rule date by date (`rule`), kept on disk with the history
of every decision (`store`). `irisflow champion …` and `irisflow predict` (service.cli.champion) read it;
the runner decides after every run (`decide_pending`)."""

from .rule import Gates, ModelUnusable, NoSuchModel, decide_pending, load_model, override, replay
from .store import Ledger, current, decisions_by_date

__all__ = [
    "Gates",
    "Ledger",
    "ModelUnusable",
    "NoSuchModel",
    "current",
    "decide_pending",
    "decisions_by_date",
    "load_model",
    "override",
    "replay",
]
