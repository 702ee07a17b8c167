"""Registry access: a client and credentials per configured registry, logins, Kubernetes
pull secrets and ECR set-up."""
