"""Training, below the `segcli train` service: the run's options, the `Trainer` loop, reproducible seeding.

`segcli.services.train.train` builds the data and the model from a `TrainConfig`, then hands them to a
`Trainer`, which steps, validates, saves and resumes, and reports through callbacks.
"""
