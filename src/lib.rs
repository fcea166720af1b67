//! vaultkey-operator: Azure Key Vault keys managed as Kubernetes `VaultKey` resources.
pub mod access;
pub mod api;
pub mod controller;
pub mod health;
pub mod key_material;
pub mod keyvault;
pub mod keyvault_rules;
pub mod leader;
pub mod period;
pub mod plan;
pub mod public_key;
pub mod publish;
pub mod retention;
pub mod status;
pub mod telemetry;
pub mod validate;
pub mod vault_hosts;
