//! The request handler, in two parts: `handle` owns timing, metrics, the access log and turning
//! every error into a response; `decide_and_answer` is the straight line of steps a request takes
//! (identity, path, route, access lists, limiter, forward or answer).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http::header::{HOST, TRANSFER_ENCODING};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::Either;
use hyper::body::Incoming;

use super::access::{self, ListMatch};
use super::body::GatewayBody;
use super::client_body::ClientBody;
use super::forward_headers::{self, TransferCodings};
use super::response::{self, GatewayError};
use super::stats::RequestStats;
use super::{client_ip, cost, extended_connect, grpc, host, rate_headers, route, tunnel};
use crate::alerts::{Alert, Alerter};
use crate::auth::{Authenticator, Claims, Identity, Invalid, Outcome, PeerCert};
use crate::config::compiled::{Balance, Retry, Target, Upstream};
use crate::config::{Config, Live};
use crate::limiter::{ClientId, Limiter, RequestView, Verdict};
use crate::metrics::{DecisionLabel, Metrics};
use crate::net;
use crate::proxy::pool::{self, Dispatch, Targets, WorkerTargets};
use crate::proxy::upstream::UpstreamPool;
use crate::uri_path as path;

/// Facts about the connection a request arrived on.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub(crate) peer: SocketAddr,
    pub(crate) tls: bool,
    /// The client certificate the TLS handshake verified (`[server.tls] client_ca`).
    pub(crate) peer_cert: Option<Arc<PeerCert>>,
    /// Served able to switch protocols (some route relayed `Upgrade` when it was accepted).
    pub(crate) upgrades: bool,
}

/// Everything a request needs, shared by all connections.
pub(crate) struct Gateway {
    pub(crate) live: Arc<Live>,
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) upstreams: UpstreamPool,
    /// Which target of an upstream each request goes to (this worker's view of the shared
    /// state).
    pub(crate) targets: WorkerTargets,
    pub(crate) metrics: Arc<Metrics>,
    /// Blocks and rejection thresholds are reported here (it never waits).
    pub(crate) alerts: Alerter,
    /// Metric handles of this worker (see `stats`).
    pub(crate) stats: RequestStats,
}

/// What the outer handler records once the inner one is done.
#[derive(Default)]
struct RequestRecord {
    route: Option<usize>,
    decision: Option<DecisionLabel>,
    client: Option<IpAddr>,
    /// The content type of a gRPC call: the gateway's own answers then take gRPC's form.
    grpc: Option<HeaderValue>,
}

impl Gateway {
    /// A gateway without alerts.
    pub(crate) fn new(
        live: Arc<Live>,
        limiter: Arc<Limiter>,
        upstreams: UpstreamPool,
        targets: Arc<Targets>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Gateway {
            live,
            limiter,
            upstreams,
            targets: WorkerTargets::new(targets),
            metrics,
            alerts: Alerter::disabled(),
            stats: RequestStats::default(),
        }
    }

    pub(crate) async fn handle(
        &self,
        conn: ConnInfo,
        req: Request<Incoming>,
    ) -> Response<GatewayBody> {
        let started = Instant::now();
        // One snapshot for the whole request: a reload mid-request cannot mix two configs.
        let config = self.live.snapshot();
        let mut record = RequestRecord {
            grpc: grpc::content_type(req.headers()).cloned(),
            ..RequestRecord::default()
        };
        let method = req.method().clone();
        let resp = match self
            .decide_and_answer(&config, conn, req, &mut record)
            .await
        {
            Ok(resp) => resp,
            Err(err) => {
                if record.decision.is_none() {
                    record.decision = Some(err.decision().unwrap_or(DecisionLabel::NoRoute));
                }
                err.into_response_for(record.grpc.as_ref())
            }
        };
        let route_name = record
            .route
            .and_then(|i| config.routes.get(i))
            .map_or("", |r| &*r.name);
        let decision = record.decision.unwrap_or(DecisionLabel::NoRoute);
        let elapsed = started.elapsed();
        self.stats.record(
            &self.metrics,
            &config,
            record.route,
            decision,
            elapsed.as_secs_f64(),
        );
        // Read per request, so a reload switches it.
        if config.server.access_log {
            tracing::info!(
                target: "rategate::access",
                route = route_name,
                decision = decision.as_str(),
                status = resp.status().as_u16(),
                method = %method,
                client = %record.client.map_or_else(String::new, |ip| ip.to_string()),
                duration_us = elapsed.as_micros() as u64,
                "request"
            );
        }
        resp
    }

    async fn decide_and_answer(
        &self,
        config: &Arc<Config>,
        conn: ConnInfo,
        req: Request<Incoming>,
        record: &mut RequestRecord,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        if head_size(&req) > config.server.max_header_bytes {
            return Err(GatewayError::HeadTooLarge);
        }
        // WebSocket over HTTP/2 is routed and limited as the GET of an HTTP/1.1 upgrade.
        let ws_over_h2 = extended_connect::websocket(&req)?;
        let method = if ws_over_h2 {
            &Method::GET
        } else {
            req.method()
        };
        let host = host::addressed(&req)?;

        let peer = conn.peer.ip().to_canonical();
        let server = &config.server;
        let peer_trusted = server.trusted_proxies.contains(peer);
        let client = if peer_trusted {
            client_ip::resolve(peer, req.headers(), &server.trusted_proxies)
        } else {
            peer
        };
        record.client = Some(client);

        // The rules are read per request, so a reload switches them.
        let normalized =
            path::normalize(req.uri().path(), server.path_rules).map_err(GatewayError::BadPath)?;
        let route = route::find(
            &config.routes,
            method,
            host,
            req.headers(),
            &normalized,
            req.uri().query(),
        )
        .ok_or(GatewayError::NoRoute)?;
        record.route = Some(route.index);
        if ws_over_h2 {
            extended_connect::route_allows(&route.upgrade)?;
        }

        let listed = access::check(&config.access, client);
        if listed == ListMatch::Deny {
            return Err(GatewayError::Forbidden);
        }
        // Before any store call: a refused token costs no round trip.
        let claims = match &route.auth {
            None => None,
            Some(auth) => self.authenticate(auth, req.headers())?,
        };
        let identity = Identity {
            claims: claims.as_deref(),
            peer: conn.peer_cert.as_deref(),
        };

        let verdict = match listed {
            ListMatch::Deny => return Err(GatewayError::Forbidden),
            ListMatch::Bypass => self.limiter.check_revoked(identity).await,
            ListMatch::Normal => {
                let id = ClientId {
                    ip: client,
                    key: net::client_key(client, server.ipv6_prefix),
                };
                let view = RequestView {
                    method,
                    path: &normalized,
                    query: req.uri().query(),
                    headers: req.headers(),
                    // Allow-listed clients are never limited, so only here is the cost read.
                    cost: cost::of(&route.cost, req.headers())?,
                    identity,
                };
                let verdict = self.limiter.check(route, &id, view).await;
                self.note_rejection(config, &id.key, &verdict);
                verdict
            }
        };

        // `admission`: what the request owes the store once answered (count-by-response charges,
        // a concurrency lease); dropping it unanswered releases the lease.
        let (report, decision, admission) = match verdict {
            Verdict::Unlimited => (None, DecisionLabel::Allowed, None),
            Verdict::Allowed { report, admission } => {
                (Some(report), DecisionLabel::Allowed, admission)
            }
            Verdict::ShadowLimited {
                report, admission, ..
            } => (Some(report), DecisionLabel::ShadowLimited, admission),
            // Refusals are answered, and their decision recorded, like every other error.
            Verdict::Limited {
                report,
                policy,
                retry_after_s,
                ..
            } => {
                return Err(GatewayError::RateLimited {
                    report,
                    policy,
                    retry_after_s,
                })
            }
            Verdict::Blocked { retry_after_s } => {
                return Err(GatewayError::Blocked { retry_after_s })
            }
            // Only a route with `auth` sends a token to the store, so `auth` is set here.
            Verdict::Revoked => {
                let realm = route.auth.as_ref().map_or_else(Arc::default, |auth| {
                    self.count_auth(auth, &Outcome::Refused(Some(Invalid::Revoked)));
                    auth.name.clone()
                });
                return Err(GatewayError::Unauthorized {
                    realm,
                    invalid: Some(Invalid::Revoked),
                });
            }
            Verdict::Unavailable { retry_after_s } => {
                return Err(GatewayError::Unavailable { retry_after_s })
            }
        };
        record.decision = Some(decision);

        let head_request = req.method() == Method::HEAD;
        // Whether the response is the upstream's (or the route's own): gateway errors are not
        // answers a count-by-response policy counts.
        let mut answered = true;
        // Set when the upstream switched protocols: the tunnel to hand the connection.
        let mut switched = None;
        let mut resp = match &route.target {
            Target::Respond { status, body } => response::respond(*status, body.clone()),
            Target::Upstream(upstream) => {
                // The upstream URI is built while the normalized path still borrows the request
                // (no owned copy of the path per request); `forward` then takes the request.
                let target_path = route::forward_path(route, &normalized);
                // Only `hash_client` needs the client's key (one allocation).
                let affinity = match upstream.balance {
                    Balance::HashClient => {
                        pool::client_hash(&net::client_key(client, server.ipv6_prefix))
                    }
                    _ => 0,
                };
                let forwarded = upstream
                    .uri_for(target_path, req.uri().query())
                    .map(|uri| Forward {
                        config,
                        upstream,
                        retry: route.retry.as_ref(),
                        affinity,
                        uri,
                        peer,
                        peer_trusted,
                        strip_client_ip: server.forward_client_ip_headers && !peer_trusted,
                        tls: conn.tls,
                        // A connection accepted before a reload turned upgrades on cannot switch
                        // (an HTTP/2 stream always can).
                        upgrade: if ws_over_h2 {
                            Some(HeaderValue::from_static("websocket"))
                        } else {
                            conn.upgrades
                                .then(|| tunnel::requested(&req, &route.upgrade))
                                .flatten()
                        },
                        ws_over_h2,
                    })
                    .map_err(|e| GatewayError::UpstreamRequest(e.to_string()));
                let forwarded = match forwarded {
                    Ok(fwd) => self.forward(fwd, req).await,
                    Err(err) => Err(err),
                };
                match forwarded {
                    Ok((resp, ends)) => {
                        switched = ends;
                        resp
                    }
                    // The rate-limit headers belong on every response of a limited route,
                    // gateway errors included.
                    Err(err) => {
                        answered = false;
                        err.into_response_for(record.grpc.as_ref())
                    }
                }
            }
        };
        if let Some(report) = &report {
            // Replaces whatever rate-limit headers the upstream sent.
            rate_headers::apply_rate_headers(resp.headers_mut(), report);
        }
        if let Some(ends) = switched {
            // The request lasts as long as its tunnel: what it owes is settled when that ends.
            tunnel::hand_over(&mut resp, ends, admission, self.metrics.clone());
            return Ok(resp);
        }
        if let Some(admission) = admission.filter(|_| answered) {
            if let Some(owed) = admission.respond(resp.status().as_u16()) {
                // Settled before the client can see the end of the response: with the last
                // frame of a body, or before the head when there is no body to send.
                if bodiless(head_request, resp.status())
                    || resp.body().is_end_stream()
                    || resp.body().size_hint().exact() == Some(0)
                {
                    owed.settle().await;
                } else {
                    resp = resp.map(|body| GatewayBody::settled(body, owed));
                }
            }
        }
        Ok(resp)
    }

    /// The verified claims of the request's token (`None`: anonymous), or the 401, counted
    /// either way.
    fn authenticate(
        &self,
        auth: &Authenticator,
        headers: &http::HeaderMap,
    ) -> Result<Option<Arc<Claims>>, GatewayError> {
        let outcome = auth.authenticate(headers);
        self.count_auth(auth, &outcome);
        match outcome {
            Outcome::Verified(claims) => Ok(Some(claims)),
            Outcome::Anonymous(_) => Ok(None),
            Outcome::Refused(invalid) => Err(GatewayError::Unauthorized {
                realm: auth.name.clone(),
                invalid,
            }),
        }
    }

    /// Count `outcome` in `rategate_auth_total` (a revoked token, verified first, is counted
    /// twice: `verified`, then `rejected`/`revoked` once the store found its revocation).
    fn count_auth(&self, auth: &Authenticator, outcome: &Outcome) {
        let (result, reason, slot) = outcome.labels();
        if let Some(counter) = auth.counters.get(slot) {
            counter
                .get_or_init(|| {
                    self.metrics
                        .auth
                        .with_label_values(&[&*auth.name, result, reason])
                })
                .inc();
        }
    }

    /// Alerts for a rejected request: the rejection threshold, and a block this request started.
    /// Never waits (the alerter only queues).
    fn note_rejection(&self, config: &Config, client: &str, verdict: &Verdict) {
        let blocked_for = match verdict {
            Verdict::Limited {
                blocked_for_s,
                blocked_by,
                ..
            } => blocked_for_s.map(|s| (blocked_by.as_deref().map(|p| &*p.name), s)),
            Verdict::Blocked { .. } => None,
            _ => return,
        };
        if let Some(threshold) = config.alerts.as_ref().and_then(|a| a.threshold) {
            self.alerts.rejected(threshold, client);
        }
        let Some((policy, secs)) = blocked_for else {
            return;
        };
        // The periodic refresh from the store corrects this; until then it is not a block behind.
        self.metrics.blocked_clients.inc();
        self.alerts.notify(Alert::ClientBlocked {
            client: client.to_owned(),
            reason: policy.map_or_else(String::new, |p| format!("policy:{p}")),
            policy: policy.map(str::to_owned),
            duration: std::time::Duration::from_secs(secs),
        });
    }

    /// The upstream's response, and the two ends of the tunnel when it switched protocols.
    async fn forward(
        &self,
        fwd: Forward<'_>,
        mut req: Request<Incoming>,
    ) -> Result<(Response<GatewayBody>, Option<tunnel::Ends>), GatewayError> {
        // Taken before the request is passed on: hyper hands the client's IO over through it.
        let client_end = fwd.upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        // Read before the URI is rewritten to the upstream's.
        let original_host = original_host(&parts);
        let client_version = parts.version;
        // `TE` is hop-by-hop, but whether the client takes trailers (gRPC's status) is passed on.
        let te_trailers = forward_headers::accepts_trailers(&parts.headers);
        parts.uri = fwd.uri;
        // hyper undid the client's final `chunked` and frames the body again; codings before it
        // are still on the bytes, so the upstream is told (hyper adds `chunked` after them).
        let (codings, forwarded) =
            forward_headers::remove_hop_by_hop_noting(&mut parts.headers, fwd.strip_client_ip);
        if let TransferCodings::Other(codings) = codings {
            parts.headers.insert(TRANSFER_ENCODING, codings);
        }
        if let Some(protocols) = &fwd.upgrade {
            tunnel::ask_upstream(&mut parts.headers, protocols.clone());
        }
        forward_headers::join_cookies(&mut parts.headers);
        let key = if fwd.ws_over_h2 {
            let key = extended_connect::ask_upstream(&mut parts.method, &mut parts.headers)
                .map_err(|e| GatewayError::UpstreamRequest(e.to_string()))?;
            Some(key)
        } else {
            None
        };
        forward_headers::set_forwarded(
            &mut parts.headers,
            forwarded,
            fwd.peer,
            fwd.peer_trusted,
            if fwd.tls { "https" } else { "http" },
            original_host.as_ref(),
        );
        // The upstream's own Host is set per target (`UpstreamPool::send`).
        let mut resp = self
            .targets
            .send(
                &self.upstreams,
                fwd.config,
                Dispatch {
                    upstream: fwd.upstream,
                    affinity: fwd.affinity,
                    retry: fwd.retry,
                    te_trailers,
                },
                // The request is taken in the form it is sent in, so the pool's future holds it
                // once (an async fn keeps its arguments for its whole life).
                Request::from_parts(parts, Either::Left(ClientBody::new(body))),
            )
            .await?;
        // `send` relays a 101 only to a request that asked to switch.
        if let (Some(client), Some(asked)) = (client_end, &fwd.upgrade) {
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                let protocols = tunnel::switched_to(resp.headers(), asked).map_err(|what| {
                    self.upstreams.protocol_error(fwd.upstream, what);
                    GatewayError::UpstreamProtocol(what)
                })?;
                if let Some(key) = &key {
                    extended_connect::confirm(&mut resp, key).map_err(|what| {
                        self.upstreams.protocol_error(fwd.upstream, what);
                        GatewayError::UpstreamProtocol(what)
                    })?;
                }
                let upstream = hyper::upgrade::on(&mut resp);
                forward_headers::remove_hop_by_hop(resp.headers_mut(), false);
                if key.is_none() {
                    tunnel::confirm(resp.headers_mut(), protocols);
                }
                let ends = tunnel::Ends {
                    client,
                    upstream,
                    stream: key.is_some(),
                };
                return Ok((resp.map(GatewayBody::upstream), Some(ends)));
            }
            // To a CONNECT, a 2xx says the tunnel is open: never relayed unless it is.
            if key.is_some() && resp.status().is_success() {
                let what = "a 2xx to a WebSocket handshake, without switching";
                self.upstreams.protocol_error(fwd.upstream, what);
                return Err(GatewayError::UpstreamProtocol(what));
            }
        }
        if let TransferCodings::Other(codings) =
            forward_headers::remove_hop_by_hop(resp.headers_mut(), false)
        {
            // Only HTTP/1.1 has transfer codings; to anyone else the coded bytes would pass as
            // the content itself (nginx answers 502 here too).
            if client_version != Version::HTTP_11 {
                self.upstreams.protocol_error(
                    fwd.upstream,
                    "transfer coding the client's protocol cannot carry",
                );
                return Err(GatewayError::UpstreamProtocol("transfer coding"));
            }
            resp.headers_mut().insert(TRANSFER_ENCODING, codings);
        }
        Ok((resp.map(GatewayBody::upstream), None))
    }
}

struct Forward<'a> {
    config: &'a Arc<Config>,
    upstream: &'a Upstream,
    /// The client's hash for `hash_client` (0 otherwise).
    affinity: u64,
    /// The route's `retry`.
    retry: Option<&'a Retry>,
    /// The upstream's URI for this request (normalized, prefix-stripped path and the query).
    uri: http::Uri,
    peer: IpAddr,
    peer_trusted: bool,
    /// Remove X-Real-IP, Forwarded and the like (an untrusted peer, and the protection on).
    strip_client_ip: bool,
    tls: bool,
    /// The `Upgrade` to relay (the route allows every protocol it names), see `tunnel`.
    upgrade: Option<HeaderValue>,
    /// An HTTP/2 extended CONNECT, made an HTTP/1.1 WebSocket handshake (`extended_connect`).
    ws_over_h2: bool,
}

/// Whether the response to this request is sent without a body whatever its body holds (RFC 9110
/// §9.3.2, §15.3.5, §15.4.5): the client has it all once the head arrives.
fn bodiless(head_request: bool, status: StatusCode) -> bool {
    head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

fn original_host(parts: &http::request::Parts) -> Option<HeaderValue> {
    match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(HOST).cloned(),
    }
}

/// Bytes of the request head as received (HTTP/2 heads are measured the same way, so one limit
/// applies to both protocols).
fn head_size<B>(req: &Request<B>) -> usize {
    let line = req.method().as_str().len()
        + req.uri().path_and_query().map_or(1, |pq| pq.as_str().len())
        + 12;
    req.headers().iter().fold(line, |acc, (name, value)| {
        acc + name.as_str().len() + value.len() + 4
    })
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;
    use crate::proxy::upstream_client::UpstreamClient;

    /// The size of the future `f` returns, without calling it.
    fn size1<A, F: Future>(_: impl FnOnce(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    fn size3<A, B, C, F: Future>(_: impl FnOnce(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    fn size4<A, B, C, D, F: Future>(_: impl FnOnce(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    fn size5<A, B, C, D, E, F: Future>(_: impl FnOnce(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A measurement, not a check (sizes differ between debug and release builds): the futures
    /// hyper moves per request (HTTP/1.1 into its dispatch, HTTP/2 into each stream's task) and
    /// what they are made of. `cargo test --release --lib future_sizes -- --ignored --nocapture`
    #[test]
    #[ignore = "measurement: run with --release --ignored --nocapture"]
    fn future_sizes() {
        let sizes = [
            (
                "handle",
                size1(
                    |(g, c, r): (Arc<Gateway>, ConnInfo, Request<Incoming>)| async move {
                        g.handle(c, r).await
                    },
                ),
            ),
            ("decide_and_answer", size5(Gateway::decide_and_answer)),
            ("forward", size3(Gateway::forward)),
            ("Limiter::check", size4(Limiter::check)),
            ("WorkerTargets::send", size5(WorkerTargets::send)),
            ("UpstreamPool::send", size5(UpstreamPool::send)),
            (
                "UpstreamClient::round_trip",
                size5(UpstreamClient::round_trip),
            ),
        ];
        for (name, size) in sizes {
            eprintln!("{name}: {size} bytes");
        }
    }
}
