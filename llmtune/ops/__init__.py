"""Building blocks the deploys share: recording original state, evaluating checks, reporting."""
