"""Chapter-5 (Risk Extrapolation) studies."""
