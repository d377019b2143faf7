"""What the workflows run on: data sets (MNIST-5k, digits, IDX files; no torch) and the model zoo (torch)."""
