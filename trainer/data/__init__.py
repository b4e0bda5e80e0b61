"""A job's data: the dataset read as pixels, the job's splits, transforms and cached features."""
