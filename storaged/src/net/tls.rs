//! Cluster-secret authentication: a CA derived from the secret, node certificates, and
//! the rustls configurations that require them on both sides (design in the
//! [module doc](super)).

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ED25519,
};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;

use super::identity::NodeKey;
use super::{ALPN, NetError};
use crate::util::id::Id32;

/// The DNS name every node certificate carries and every client asks for.
///
/// Node identity is the certificate's key, not a name; the name only satisfies the
/// WebPKI server-name check, which the cluster CA makes meaningful (only secret holders
/// can issue certificates for it).
pub const CLUSTER_SERVER_NAME: &str = "storaged";

/// blake3 `derive_key` context for the cluster CA's ed25519 seed. Changing it changes
/// every cluster's CA: nodes of different versions would refuse each other.
const CA_SEED_CONTEXT: &str = "storaged net 2026-11 cluster CA ed25519 seed v1";

/// DER prefix of an RFC 8410 PKCS#8 v1 `OneAsymmetricKey` for Ed25519; the 32-byte seed
/// follows. SEQUENCE(46) { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING(34) {
/// OCTET STRING(32) seed } }.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// DER prefix of an Ed25519 `SubjectPublicKeyInfo`; the 32-byte public key follows.
/// SEQUENCE(42) { SEQUENCE { OID 1.3.101.112 }, BIT STRING(33) { 0 unused bits, key } }.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The workspace's one rustls crypto provider (DESIGN.md "TLS and crypto"): ring,
/// chosen explicitly so no process-wide default (possibly aws-lc) is ever consulted.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The credentials a node presents and the trust anchor it checks peers against.
pub(super) struct ClusterTls {
    ca_cert: CertificateDer<'static>,
    node_cert: CertificateDer<'static>,
    node_key: PrivatePkcs8KeyDer<'static>,
}

impl ClusterTls {
    /// Derives the cluster CA from `secret` and issues `node`'s certificate with it.
    pub(super) fn new(secret: &[u8; 32], node: &NodeKey) -> Result<Self, NetError> {
        let ca_key = ca_key_pair(secret)?;
        let ca_params = ca_params()?;
        let ca_cert = ca_params.self_signed(&ca_key)?.der().clone();
        let issuer = Issuer::new(ca_params, ca_key);

        let mut params = CertificateParams::new(vec![CLUSTER_SERVER_NAME.to_owned()])?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, node.node_id().to_hex());
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let node_cert = params.signed_by(node.key_pair(), &issuer)?.der().clone();
        let node_key = PrivatePkcs8KeyDer::from(node.key_pair().serialize_der());
        Ok(Self {
            ca_cert,
            node_cert,
            node_key,
        })
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, NetError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_cert.clone())?;
        Ok(Arc::new(roots))
    }

    /// TLS 1.3 server side: requires a client certificate chaining to the cluster CA.
    pub(super) fn server_config(&self) -> Result<rustls::ServerConfig, NetError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider())
            .build()
            .map_err(|e| NetError::TlsSetup(e.to_string()))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![self.node_cert.clone()],
                PrivateKeyDer::Pkcs8(self.node_key.clone_key()),
            )?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        // Every connection does the full handshake, so every connection proves the
        // secret: no tickets, no session cache, no 0-RTT.
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        cfg.send_tls13_tickets = 0;
        cfg.max_early_data_size = 0;
        Ok(cfg)
    }

    /// TLS 1.3 client side: requires the server's certificate to chain to the cluster CA
    /// and presents ours.
    pub(super) fn client_config(&self) -> Result<rustls::ClientConfig, NetError> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(
                vec![self.node_cert.clone()],
                PrivateKeyDer::Pkcs8(self.node_key.clone_key()),
            )?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        cfg.resumption = rustls::client::Resumption::disabled();
        cfg.enable_early_data = false;
        Ok(cfg)
    }
}

/// The cluster CA's key pair: a deterministic function of the secret, so every node
/// holding the secret derives the same CA and nobody else can.
fn ca_key_pair(secret: &[u8; 32]) -> Result<KeyPair, NetError> {
    let seed = blake3::derive_key(CA_SEED_CONTEXT, secret);
    let mut pkcs8 = Vec::with_capacity(ED25519_PKCS8_V1_PREFIX.len() + seed.len());
    pkcs8.extend_from_slice(&ED25519_PKCS8_V1_PREFIX);
    pkcs8.extend_from_slice(&seed);
    Ok(KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(pkcs8),
        &PKCS_ED25519,
    )?)
}

/// The CA's certificate parameters: fixed, so the issuer name in node certificates is
/// the same on every node.
fn ca_params() -> Result<CertificateParams, NetError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "storaged cluster CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    Ok(params)
}

/// The node id in a verified peer certificate chain: the end-entity certificate's
/// ed25519 public key. Called only after rustls verified the chain against the cluster
/// CA, so the key is one a secret holder certified.
pub(super) fn peer_node_id(chain: &[CertificateDer<'static>]) -> Result<Id32, NetError> {
    let end_entity = chain
        .first()
        .ok_or_else(|| NetError::PeerCertificate("no certificate presented".into()))?;
    let cert = webpki::EndEntityCert::try_from(end_entity)
        .map_err(|e| NetError::PeerCertificate(format!("unparsable certificate: {e}")))?;
    let spki = cert.subject_public_key_info();
    let key = spki
        .as_ref()
        .strip_prefix(&ED25519_SPKI_PREFIX[..])
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or_else(|| NetError::PeerCertificate("not an ed25519 key".into()))?;
    Ok(Id32(key))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn ca_is_deterministic_per_secret() {
        let a = ca_key_pair(&[7; 32]).unwrap();
        let b = ca_key_pair(&[7; 32]).unwrap();
        let c = ca_key_pair(&[8; 32]).unwrap();
        assert_eq!(a.public_key_raw(), b.public_key_raw());
        assert_ne!(a.public_key_raw(), c.public_key_raw());
    }

    #[test]
    fn node_id_is_read_from_the_certificate() {
        let key = NodeKey::from_key_pair(KeyPair::generate_for(&PKCS_ED25519).unwrap()).unwrap();
        let tls = ClusterTls::new(&[1; 32], &key).unwrap();
        assert_eq!(
            peer_node_id(std::slice::from_ref(&tls.node_cert)).unwrap(),
            key.node_id()
        );
        assert!(peer_node_id(&[]).is_err());
        assert!(peer_node_id(&[CertificateDer::from(vec![0x30, 0x00])]).is_err());
        // The CA certificate's key is not the node's.
        assert_ne!(
            peer_node_id(std::slice::from_ref(&tls.ca_cert)).unwrap(),
            key.node_id()
        );
    }
}
