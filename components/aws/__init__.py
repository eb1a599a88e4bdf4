"""AWS building blocks: network, EKS cluster with GPU node groups, S3 model bucket, IRSA roles."""
