//! A DNS server on loopback whose records a test changes, for the gateway's
//! `dns.nameservers`: host names of backends that move, or that do not exist.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA};
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;

type Table = Arc<Mutex<HashMap<String, Vec<IpAddr>>>>;

/// Answers A and AAAA queries from its table with a TTL of one second (so a
/// resolver that honours TTLs asks again soon); unknown names get NXDOMAIN.
pub struct FakeDns {
    addr: SocketAddr,
    records: Table,
    task: tokio::task::JoinHandle<()>,
}

impl FakeDns {
    pub async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let records: Table = Arc::default();
        let table = records.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                if let Some(answer) = answer(&buf[..n], &table) {
                    let _ = socket.send_to(&answer, from).await;
                }
            }
        });
        Self {
            addr,
            records,
            task,
        }
    }

    /// `127.0.0.1:PORT`, for `dns.nameservers`.
    pub fn nameserver(&self) -> String {
        self.addr.to_string()
    }

    /// Points `name` at these addresses (replacing what it had).
    pub fn set(&self, name: &str, ips: &[&str]) {
        let ips = ips.iter().map(|ip| ip.parse().unwrap()).collect();
        self.records
            .lock()
            .unwrap()
            .insert(name.to_lowercase(), ips);
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(query: &[u8], table: &Table) -> Option<Vec<u8>> {
    let req = Message::from_vec(query).ok()?;
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    for q in &req.queries {
        resp.add_query(q.clone());
        let name = q.name().to_ascii().trim_end_matches('.').to_lowercase();
        let records = table.lock().unwrap().get(&name).cloned();
        let Some(ips) = records else {
            resp.metadata.response_code = ResponseCode::NXDomain;
            continue;
        };
        for ip in ips {
            let rdata = match (ip, q.query_type()) {
                (IpAddr::V4(v4), RecordType::A) => RData::A(A(v4)),
                (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(v6)),
                _ => continue,
            };
            resp.add_answer(Record::from_rdata(q.name().clone(), 1, rdata));
        }
    }
    resp.to_vec().ok()
}
