"""Files for CI systems: the generated GitHub/GitLab/Jenkins files, the native CI outputs of a
release (GITHUB_OUTPUT, dotenv, JUnit) and the strict YAML writer both use."""
