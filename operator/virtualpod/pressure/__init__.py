"""Memory pressure: the policy (pure) and the monitor that samples, decides and acts."""
