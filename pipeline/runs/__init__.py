"""Local pipeline runs seen from outside: `results.py` reads what a run folder's ML Metadata recorded
(evaluation, blessing, pushed model, examples); `progress.py` filters the runners' console output."""
