"""The job service: every generation, whatever dialect it came in through, is a job run by
a worker on the engine. No torch and no web framework here."""
