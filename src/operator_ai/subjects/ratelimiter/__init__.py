"""The rate limiter: the service we ship (`service/`, which its nodes run and which imports
nothing of the operator's) and the subject that runs, breaks and watches it (`subject.py`).
This file stays empty, so that a node starting the service loads only the service."""
