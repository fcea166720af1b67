//! vaultkey-operator: Azure Key Vault keys managed as Kubernetes `VaultKey` resources.
pub mod api;
pub mod period;
pub mod validate;
pub mod key_material;
pub mod keyvault;
pub mod plan;
pub mod status;
pub mod telemetry;
pub mod controller;
