//! A node's QUIC endpoint: binding its socket, accepting and opening links
//! that passed mutual TLS, the roster check and the preamble exchange.
//!
//! What a link carries afterwards is [`super::link`]'s business; who is
//! linked to whom over time is the [`super::Hub`]'s.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use super::config::{allowed_snapshot, peer_names, quinn_configs, Allowed, TransportOptions};
use super::link::Link;
use super::{Result, TransportError, CLOSE_DONE, CLOSE_POLICY, PREAMBLE};
use crate::pki::NodeIdentity;

/// A node's QUIC endpoint: accepts and opens mutually authenticated links.
#[derive(Debug, Clone)]
pub struct Endpoint {
    inner: quinn::Endpoint,
    name: String,
    allowed: Allowed,
    options: TransportOptions,
}

impl Endpoint {
    /// Binds `addr` with `identity`; inbound peers must present one of `allowed`.
    pub fn bind(
        addr: SocketAddr,
        identity: &NodeIdentity,
        allowed: impl IntoIterator<Item = String>,
        options: TransportOptions,
    ) -> Result<Endpoint> {
        Self::open(addr, identity, allowed, options, true)
    }

    /// A client-only endpoint on an ephemeral UDP port of `addr`'s family
    /// (relay mode): it dials, and never answers an inbound handshake, since
    /// it has no server configuration (quinn drops such packets unanswered).
    pub fn client(
        addr: SocketAddr,
        identity: &NodeIdentity,
        allowed: impl IntoIterator<Item = String>,
        options: TransportOptions,
    ) -> Result<Endpoint> {
        Self::open(addr, identity, allowed, options, false)
    }

    fn open(
        addr: SocketAddr,
        identity: &NodeIdentity,
        allowed: impl IntoIterator<Item = String>,
        options: TransportOptions,
        serve: bool,
    ) -> Result<Endpoint> {
        let allowed: Allowed = Arc::new(RwLock::new(allowed.into_iter().collect()));
        let (server_config, client_config) = quinn_configs(identity, &allowed, &options)?;
        let bound = if serve {
            quinn::Endpoint::server(server_config, addr)
        } else {
            quinn::Endpoint::client(addr)
        };
        let mut inner = bound.map_err(|source| TransportError::Bind { addr, source })?;
        inner.set_default_client_config(client_config);
        Ok(Endpoint {
            inner,
            name: identity.name().to_owned(),
            allowed,
            options,
        })
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.inner.local_addr().map_err(|e| TransportError::Stream {
            peer: self.name.clone(),
            reason: e.to_string(),
        })
    }

    /// Replaces the set of names accepted inbound.
    pub fn set_allowed(&self, names: impl IntoIterator<Item = String>) {
        let set: BTreeSet<String> = names.into_iter().collect();
        match self.allowed.write() {
            Ok(mut g) => *g = set,
            Err(p) => *p.into_inner() = set,
        }
    }

    /// Adds names to the set accepted inbound.
    pub fn allow(&self, names: impl IntoIterator<Item = String>) {
        match self.allowed.write() {
            Ok(mut g) => g.extend(names),
            Err(p) => p.into_inner().extend(names),
        }
    }

    /// Waits for the next inbound connection and completes it into a [`Link`].
    /// Returns `None` once the endpoint is closed; `Some(Err)` for a refused
    /// peer (already logged), after which the caller simply keeps accepting.
    pub async fn accept(&self) -> Option<Result<Link>> {
        let incoming = self.inner.accept().await?;
        let addr = incoming.remote_address();
        Some(self.complete_inbound(incoming, addr).await)
    }

    async fn complete_inbound(&self, incoming: quinn::Incoming, addr: SocketAddr) -> Result<Link> {
        let refused = |reason: String| {
            tracing::warn!(peer_addr = %addr, "refused inbound connection: {reason}");
            TransportError::Handshake { addr, reason }
        };
        let conn = incoming
            .await
            .map_err(|e| refused(format!("handshake failed: {e}")))?;
        let names = peer_names(&conn);
        let allowed = allowed_snapshot(&self.allowed);
        let Some(peer) = names.iter().find(|n| allowed.contains(*n)).cloned() else {
            conn.close(CLOSE_POLICY.into(), b"name not allowed");
            tracing::warn!(peer_addr = %addr, names = ?names, "refused peer: name not allowed");
            return Err(TransportError::PeerNotAllowed {
                addr,
                names,
                allowed: allowed.into_iter().collect(),
            });
        };
        let accept = tokio::time::timeout(self.options.idle_timeout, conn.accept_bi());
        let (send, mut recv) = match accept.await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(refused(format!("{peer}: no stream: {e}"))),
            Err(_) => return Err(refused(format!("{peer}: opened no stream in time"))),
        };
        let mut pre = [0u8; PREAMBLE.len()];
        recv.read_exact(&mut pre)
            .await
            .map_err(|e| refused(format!("{peer}: reading preamble: {e}")))?;
        if &pre != PREAMBLE {
            conn.close(CLOSE_POLICY.into(), b"bad preamble");
            return Err(TransportError::BadPreamble { peer });
        }
        // Acknowledge, so the connector knows this side accepted its identity
        // (in TLS 1.3 the client finishes before the server judges its cert).
        let mut send = send;
        send.write_all(PREAMBLE)
            .await
            .map_err(|e| refused(format!("{peer}: writing preamble: {e}")))?;
        tracing::debug!(peer = %peer, peer_addr = %addr, "accepted link");
        let limits = self.options.limits.get(&peer).clone();
        Ok(Link::new(
            conn,
            send,
            recv,
            peer,
            self.options.max_frame,
            limits,
        ))
    }

    /// Connects to `addr`, which must prove the roster name `expected_name`.
    pub async fn connect(&self, addr: SocketAddr, expected_name: &str) -> Result<Link> {
        let fail = |reason: String| {
            tracing::warn!(peer = expected_name, peer_addr = %addr, "connection failed: {reason}");
            TransportError::Connect {
                addr,
                name: expected_name.to_owned(),
                reason,
            }
        };
        let connecting = self
            .inner
            .connect(addr, expected_name)
            .map_err(|e| fail(e.to_string()))?;
        let conn = connecting.await.map_err(|e| fail(e.to_string()))?;
        // rustls already checked the name; checking again keeps the invariant
        // local and readable.
        let names = peer_names(&conn);
        if !names.iter().any(|n| n == expected_name) {
            conn.close(CLOSE_POLICY.into(), b"wrong name");
            return Err(fail(format!("server presents names {names:?}")));
        }
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| fail(e.to_string()))?;
        send.write_all(PREAMBLE)
            .await
            .map_err(|e| fail(e.to_string()))?;
        // Wait for the acceptor's preamble: only then did it accept our identity.
        let mut pre = [0u8; PREAMBLE.len()];
        match tokio::time::timeout(self.options.idle_timeout, recv.read_exact(&mut pre)).await {
            Ok(Ok(())) if &pre == PREAMBLE => {}
            Ok(Ok(())) => {
                return Err(TransportError::BadPreamble {
                    peer: expected_name.to_owned(),
                })
            }
            Ok(Err(e)) => return Err(fail(format!("refused by the peer: {e}"))),
            Err(_) => return Err(fail("no answer to the preamble in time".into())),
        }
        Ok(Link::new(
            conn,
            send,
            recv,
            expected_name.to_owned(),
            self.options.max_frame,
            self.options.limits.get(expected_name).clone(),
        ))
    }

    /// Closes every connection and stops accepting.
    pub fn close(&self) {
        self.inner.close(CLOSE_DONE.into(), b"shutdown");
    }

    /// Waits until every connection has finished closing (so final frames are
    /// delivered before the process exits).
    pub async fn wait_idle(&self) {
        self.inner.wait_idle().await;
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;
    use crate::pki::PkiPaths;
    use std::path::Path;
    use std::time::Duration;

    #[tokio::test]
    async fn foreign_ca_client_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = ids(dir.path(), &["coordinator"]);
        let other = tempfile::tempdir().unwrap();
        // Same name, other CA: a hospital certificate the consortium never issued.
        ids(other.path(), &["hospital-1"]);
        // The rogue trusts both CAs, so it accepts our server and presents its
        // certificate: the refusal checked here is the server's.
        let bundle = other.path().join("bundle.pem");
        let mut pem = std::fs::read(other.path().join("ca.pem")).unwrap();
        pem.extend(std::fs::read(dir.path().join("ca.pem")).unwrap());
        std::fs::write(&bundle, pem).unwrap();
        let crls = other.path().join("crls.pem");
        let mut pem = std::fs::read(other.path().join("crl.pem")).unwrap();
        pem.extend(std::fs::read(dir.path().join("crl.pem")).unwrap());
        std::fs::write(&crls, pem).unwrap();
        let rogue = NodeIdentity::load(&PkiPaths {
            ca: bundle,
            crl: crls,
            ..PkiPaths::in_dir(other.path(), "hospital-1")
        })
        .unwrap();
        let server = Endpoint::bind(local(), &v[0], set(&["hospital-1"]), opts()).unwrap();
        let addr = server.local_addr().unwrap();
        let s = server.clone();
        let acceptor = tokio::spawn(async move { s.accept().await.unwrap() });
        let client = Endpoint::bind(local(), &rogue, set(&["coordinator"]), opts()).unwrap();
        let r = client.connect(addr, "coordinator").await;
        assert!(r.is_err(), "rogue client connected");
        let e = acceptor.await.unwrap().unwrap_err();
        assert!(matches!(e, TransportError::Handshake { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("invalid peer certificate"), "{msg}");
    }

    #[tokio::test]
    async fn client_not_in_roster_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = ids(dir.path(), &["coordinator", "hospital-9"]);
        let server = Endpoint::bind(local(), &v[0], set(&["hospital-1"]), opts()).unwrap();
        let addr = server.local_addr().unwrap();
        let s = server.clone();
        let acceptor = tokio::spawn(async move { s.accept().await.unwrap() });
        let client = Endpoint::bind(local(), &v[1], set(&[]), opts()).unwrap();
        let e = client.connect(addr, "coordinator").await.unwrap_err();
        assert!(matches!(e, TransportError::Connect { .. }), "{e}");
        let e = acceptor.await.unwrap().unwrap_err();
        assert!(
            e.to_string().contains("hospital-9") || e.to_string().contains("not allowed"),
            "{e}"
        );
        // Allowing it later (ring re-formed) lets it in.
        server.allow(set(&["hospital-9"]));
        let s = server.clone();
        let acceptor = tokio::spawn(async move { s.accept().await.unwrap() });
        let _link = client.connect(addr, "coordinator").await.unwrap();
        assert_eq!(acceptor.await.unwrap().unwrap().peer(), "hospital-9");
    }

    #[tokio::test]
    async fn wrong_name_server_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = ids(dir.path(), &["hospital-2", "hospital-1"]);
        // hospital-2 listens where the roster says hospital-3 is.
        let server = Endpoint::bind(local(), &v[0], set(&["hospital-1"]), opts()).unwrap();
        let addr = server.local_addr().unwrap();
        let s = server.clone();
        tokio::spawn(async move { while s.accept().await.is_some() {} });
        let client = Endpoint::bind(local(), &v[1], set(&[]), opts()).unwrap();
        let e = client.connect(addr, "hospital-3").await.unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("hospital-3"), "{msg}");
        assert!(matches!(e, TransportError::Connect { .. }));
        server.close();
    }

    /// Revokes `name`'s certificate in the CA that `provision` made in `dir`
    /// and distributes the new list to `dir/crl.pem`.
    fn revoke(dir: &Path, name: &str) {
        let mut ca = crate::pki::ca::Ca::open(&dir.join(crate::pki::LOCAL_CA_DIR)).unwrap();
        let serial = ca.serial_of(&dir.join(format!("{name}.pem"))).unwrap();
        ca.revoke(&serial, crate::pki::ca::RevokeReason::KeyCompromise)
            .unwrap();
        std::fs::copy(ca.crl_path(), dir.join(crate::pki::CRL_FILE)).unwrap();
    }

    /// Connects `client` to `server`; returns the client's error and the
    /// server's accept result.
    async fn attempt(
        server: &NodeIdentity,
        server_allows: &[&str],
        client: &NodeIdentity,
        dial_as: &str,
    ) -> (Result<Link>, Result<Link>) {
        let server = Endpoint::bind(local(), server, set(server_allows), opts()).unwrap();
        let addr = server.local_addr().unwrap();
        let s = server.clone();
        let acceptor = tokio::spawn(async move { s.accept().await.unwrap() });
        let client = Endpoint::bind(local(), client, set(&[]), opts()).unwrap();
        let c = client.connect(addr, dial_as).await;
        let a = match tokio::time::timeout(Duration::from_secs(5), acceptor).await {
            Ok(r) => r.unwrap(),
            Err(_) => Err(TransportError::EndpointClosed),
        };
        (c, a)
    }

    #[tokio::test]
    async fn revoked_client_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        ids(dir.path(), &["coordinator", "hospital-1", "hospital-2"]);
        revoke(dir.path(), "hospital-2");
        let coord = reload(dir.path(), "coordinator");
        let (c, a) = attempt(
            &coord,
            &["hospital-1", "hospital-2"],
            &reload(dir.path(), "hospital-2"),
            "coordinator",
        )
        .await;
        assert!(c.is_err(), "revoked client connected");
        let e = a.unwrap_err().to_string();
        assert!(e.contains("Revoked"), "{e}");
        // Not revoked: still in.
        let (c, a) = attempt(
            &coord,
            &["hospital-1", "hospital-2"],
            &reload(dir.path(), "hospital-1"),
            "coordinator",
        )
        .await;
        assert!(c.is_ok() && a.is_ok());
    }

    #[tokio::test]
    async fn revoked_server_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        ids(dir.path(), &["coordinator", "hospital-1"]);
        revoke(dir.path(), "coordinator");
        let (c, _) = attempt(
            &reload(dir.path(), "coordinator"),
            &["hospital-1"],
            &reload(dir.path(), "hospital-1"),
            "coordinator",
        )
        .await;
        let e = c.unwrap_err();
        assert!(matches!(e, TransportError::Connect { .. }), "{e}");
        let e = e.to_string();
        assert!(e.contains("coordinator") && e.contains("Revoked"), "{e}");
    }

    /// Issues `name` a certificate from the CA in `dir` with `validity`, into
    /// a directory of its own (the node's).
    fn issue(dir: &Path, name: &str, validity: crate::pki::ca::Validity) -> NodeIdentity {
        let node_dir = dir.join(format!("node-{name}"));
        let req = crate::pki::request(&node_dir, name).unwrap();
        let mut ca = crate::pki::ca::Ca::open(&dir.join(crate::pki::LOCAL_CA_DIR)).unwrap();
        ca.sign(&req.csr, name, &validity, &req.cert).unwrap();
        for f in [crate::pki::CA_FILE, crate::pki::CRL_FILE] {
            std::fs::copy(dir.join(f), node_dir.join(f)).unwrap();
        }
        reload(&node_dir, name)
    }

    #[tokio::test]
    async fn expired_and_not_yet_valid_certificates_are_refused() {
        use crate::pki::ca::Validity;
        let dir = tempfile::tempdir().unwrap();
        let v = ids(dir.path(), &["coordinator"]);
        let expired = issue(
            dir.path(),
            "hospital-1",
            Validity::starting("2020-01-01", 30).unwrap(),
        );
        let early = issue(
            dir.path(),
            "hospital-2",
            Validity::starting("2099-01-01", 30).unwrap(),
        );
        for (client, why) in [
            (&expired, "certificate expired"),
            (&early, "certificate not valid yet"),
        ] {
            let (c, a) = attempt(&v[0], &["hospital-1", "hospital-2"], client, "coordinator").await;
            assert!(c.is_err(), "{why} client connected");
            let e = a.unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
            // And as a server: the coordinator dialling it refuses it.
            let (c, _) = attempt(client, &["coordinator"], &v[0], client.name()).await;
            let e = c.unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(client.name()), "{e}");
        }
    }

    /// A coordinator holding only its own key and certificate (no CA key)
    /// signs itself a "hospital-2" certificate, using its own certificate as
    /// the issuer; it trusts that issuer itself, so it can load and present it.
    /// The consortium's nodes refuse it in both directions.
    #[tokio::test]
    async fn hospital_minted_by_the_coordinator_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = ids(dir.path(), &["coordinator", "hospital-1"]);
        let d = dir.path();
        let coord_key =
            rcgen::KeyPair::from_pem(&std::fs::read_to_string(d.join("coordinator.key")).unwrap())
                .unwrap();
        let coord_pem = std::fs::read_to_string(d.join("coordinator.pem")).unwrap();
        let mut issuer_params = rcgen::CertificateParams::from_ca_cert_pem(&coord_pem).unwrap();
        issuer_params.key_usages = Vec::new();
        let issuer = issuer_params.self_signed(&coord_key).unwrap();
        let evil = d.join("evil");
        std::fs::create_dir(&evil).unwrap();
        let req = crate::pki::request(&evil, "hospital-2").unwrap();
        let key_pem = std::fs::read_to_string(&req.key).unwrap();
        let fake_key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["hospital-2".to_string()]).unwrap();
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let fake = p.signed_by(&fake_key, &issuer, &coord_key).unwrap();
        std::fs::write(&req.cert, fake.pem()).unwrap();
        // It trusts the consortium CA and its own "CA", with a list for each.
        let crl = rcgen::CertificateRevocationListParams {
            this_update: time::OffsetDateTime::now_utc(),
            next_update: time::OffsetDateTime::now_utc() + time::Duration::days(1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&issuer, &coord_key)
        .unwrap();
        let mut cas = std::fs::read_to_string(d.join("ca.pem")).unwrap();
        cas.push_str(&coord_pem);
        std::fs::write(evil.join("ca.pem"), cas).unwrap();
        let mut crls = std::fs::read_to_string(d.join("crl.pem")).unwrap();
        crls.push_str(&crl.pem().unwrap());
        std::fs::write(evil.join("crl.pem"), crls).unwrap();
        let rogue = reload(&evil, "hospital-2");
        assert_eq!(rogue.name(), "hospital-2");

        // hospital-1 accepts "hospital-2" (a ring peer): refused.
        let (c, a) = attempt(&v[1], &["coordinator", "hospital-2"], &rogue, "hospital-1").await;
        assert!(c.is_err(), "minted hospital-2 connected");
        let e = a.unwrap_err().to_string();
        assert!(e.contains("UnknownIssuer"), "{e}");
        // hospital-1 dials "hospital-2" where the coordinator says it is: refused.
        let (c, _) = attempt(&rogue, &["hospital-1"], &v[1], "hospital-2").await;
        let e = c.unwrap_err().to_string();
        assert!(
            e.contains("hospital-2") && e.contains("UnknownIssuer"),
            "{e}"
        );
        // The coordinator's own certificate, dialled as hospital-2: refused.
        let (c, _) = attempt(&v[0], &["hospital-1"], &v[1], "hospital-2").await;
        let e = c.unwrap_err().to_string();
        assert!(e.contains("hospital-2"), "{e}");
    }
}
