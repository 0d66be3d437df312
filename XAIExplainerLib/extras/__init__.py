"""Apart from the product: the demo and the benchmark against captum and MONAI."""
