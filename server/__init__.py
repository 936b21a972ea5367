"""Start vLLM right for a reranker.

`python -m server serve --profile P` turns a profile (profiles.py) and its memory plan
(plan.py) into one vLLM command line (command.py), runs it in its own process group
(process.py) and reports startup failures in one line (failures.py).
`python -m server plan` prints the memory budget; `python -m server wait` polls /health.
"""
