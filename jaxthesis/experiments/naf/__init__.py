"""Chapter-9 (neural autoregressive flows) studies."""
