//! The machine's limits, measured in the same run as the workloads: rustls bulk throughput on
//! one core (in memory), and one loopback TCP stream.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::Instant;

use p2p_transport::tls::bench_support::measure_tls_throughput;

/// Best of `runs` rustls measurements of `bytes` each: TLS 1.3, AES-128-GCM, 1 MiB writes,
/// encryption and decryption on this one thread. In bytes per second.
pub fn tls(bytes: usize, runs: usize) -> Result<f64, String> {
    let mut best = 0.0f64;
    for _ in 0..runs.max(1) {
        let rate = measure_tls_throughput(bytes).map_err(|e| format!("rustls in memory: {e}"))?;
        best = best.max(rate);
    }
    Ok(best)
}

/// Best of `runs` transfers of `bytes` over one TCP connection on 127.0.0.1 (a sender thread
/// writing 1 MiB buffers, a receiver thread reading into 1 MiB). In bytes per second.
pub fn loopback(bytes: u64, runs: usize) -> Result<f64, String> {
    let mut best = 0.0f64;
    for _ in 0..runs.max(1) {
        best = best.max(loopback_once(bytes).map_err(|e| format!("loopback TCP: {e}"))?);
    }
    Ok(best)
}

fn loopback_once(bytes: u64) -> std::io::Result<f64> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    let receiver = std::thread::spawn(move || -> std::io::Result<(u64, Instant)> {
        let (mut stream, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            match stream.read(&mut buf)? {
                0 => return Ok((got, Instant::now())),
                n => got += n as u64,
            }
        }
    });
    let mut stream = TcpStream::connect(addr)?;
    let buf = vec![0x5a_u8; 1 << 20];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        let n = (bytes - sent).min(buf.len() as u64) as usize;
        stream.write_all(&buf[..n])?;
        sent += n as u64;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    let (got, end) = receiver
        .join()
        .map_err(|_| std::io::Error::other("the receiver thread panicked"))??;
    if got != bytes {
        return Err(std::io::Error::other(format!(
            "received {got} of {bytes} bytes"
        )));
    }
    Ok(bytes as f64 / end.duration_since(start).as_secs_f64().max(1e-9))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_moves_every_byte_and_reports_a_rate() {
        let rate = loopback(3 << 20, 1).expect("loopback transfer");
        assert!(rate > 0.0);
    }
}
