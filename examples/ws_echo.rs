//! WebSocket echo load through the gateway's tunnels, for `benches/load/websocket.sh` (`H2=1`):
//! CONNS tunnels, each on a connection of its own, opened with an HTTP/1.1 Upgrade (`h1`) or an
//! HTTP/2 extended CONNECT over h2c (`h2`, RFC 8441); each sends MESSAGES masked binary frames
//! of SIZE bytes one at a time and waits for each echo. The same client both ways, so the
//! gateway's CPU per message compares the two protocols. Prints the line `ws_bench.py` prints:
//! `messages=<n> seconds=<s> per_second=<r>`.
//!
//! ```sh
//! cargo run --release --example ws_echo -- h2 127.0.0.1:8080 16 2000 128
//! ```

use std::error::Error;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// A client's frame (RFC 6455 section 5.2): FIN + binary, masked, 7- or 16-bit length.
fn masked_frame(size: usize) -> Res<Vec<u8>> {
    let mask = [0x5au8, 0x13, 0xc4, 0x7e];
    let mut frame = vec![0x82];
    match size {
        0..=125 => frame.push(0x80 | size as u8),
        126..=65535 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(size as u16).to_be_bytes());
        }
        _ => return Err("SIZE up to 65535 bytes".into()),
    }
    frame.extend_from_slice(&mask);
    frame.extend((0..size).map(|i| b'x' ^ mask[i % 4]));
    Ok(frame)
}

/// The length of the server's (unmasked) echo of a SIZE-byte frame.
fn echo_len(size: usize) -> usize {
    size + if size < 126 { 2 } else { 4 }
}

async fn over_h1(addr: String, messages: usize, size: usize) -> Res<()> {
    let mut tcp = TcpStream::connect(&addr).await?;
    tcp.set_nodelay(true)?;
    let head = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await?;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await?;
        answer.push(byte[0]);
    }
    if !answer.starts_with(b"HTTP/1.1 101") {
        return Err(format!("no switch: {}", String::from_utf8_lossy(&answer)).into());
    }
    let frame = masked_frame(size)?;
    let mut echo = vec![0u8; echo_len(size)];
    for _ in 0..messages {
        tcp.write_all(&frame).await?;
        tcp.read_exact(&mut echo).await?;
    }
    Ok(())
}

async fn over_h2(addr: String, messages: usize, size: usize) -> Res<()> {
    let tcp = TcpStream::connect(&addr).await?;
    tcp.set_nodelay(true)?;
    let (send, conn) = h2::client::handshake(tcp).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let send = send.ready().await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !send.is_extended_connect_protocol_enabled() {
        if Instant::now() > deadline {
            return Err("the server does not enable extended CONNECT".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut req = http::Request::connect(format!("http://{addr}/"))
        .header("sec-websocket-version", "13")
        .body(())?;
    req.extensions_mut()
        .insert(h2::ext::Protocol::from("websocket"));
    let mut send = send.ready().await?;
    let (response, mut stream) = send.send_request(req, false)?;
    let resp = response.await?;
    if resp.status() != http::StatusCode::OK {
        return Err(format!("CONNECT answered {}", resp.status()).into());
    }
    let mut recv = resp.into_body();
    let frame = Bytes::from(masked_frame(size)?);
    let want = echo_len(size);
    let mut read = 0;
    for _ in 0..messages {
        stream.send_data(frame.clone(), false)?;
        while read < want {
            let chunk = recv.data().await.ok_or("stream ended")??;
            recv.flow_control().release_capacity(chunk.len())?;
            read += chunk.len();
        }
        read -= want;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [protocol, addr, conns, messages, size] = args.as_slice() else {
        return Err("usage: ws_echo <h1|h2> <host:port> <conns> <messages> <size>".into());
    };
    let (conns, messages, size): (usize, usize, usize) =
        (conns.parse()?, messages.parse()?, size.parse()?);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let addr = addr.clone();
        tasks.push(match protocol.as_str() {
            "h1" => tokio::spawn(over_h1(addr, messages, size)),
            "h2" => tokio::spawn(over_h2(addr, messages, size)),
            _ => return Err("protocol: h1 or h2".into()),
        });
    }
    for task in tasks {
        task.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let total = conns * messages;
    println!(
        "messages={total} seconds={seconds:.3} per_second={:.0}",
        total as f64 / seconds
    );
    Ok(())
}
