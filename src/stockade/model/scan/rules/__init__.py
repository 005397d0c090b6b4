"""Rule data files the model scanners load: the pickle policy (`pickle_policy.toml`)."""
