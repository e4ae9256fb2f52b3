"""Key backends and hardware access: TPM 2.0, PKCS#11 tokens, software keys, the serial bootloader."""
