//! `--prometheus ADDR`: serves the run's current metrics in Prometheus' text format at any
//! path on `ADDR`, from a background thread. Plain HTTP/1.1, one response per connection:
//! enough for a scraper, with no web framework to build.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};

use jepa_shared::metrics_table::StepRecorder;

/// Binds `address` now (so a taken port is an error before training starts) and serves
/// from a detached thread for the rest of the process. Returns the bound address.
pub fn serve(address: SocketAddr, recorder: StepRecorder) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new().name("jepa-prometheus".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            // Read the request head; the path does not matter.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|read| read > 2) {
                line.clear();
            }
            let body = recorder.prometheus_text();
            let mut stream = &stream;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    })?;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_scrape_returns_the_current_values() {
        let recorder = StepRecorder::default();
        metrics::with_local_recorder(&recorder, || metrics::gauge!("loss").set(0.5));
        let address = serve("127.0.0.1:0".parse().unwrap(), recorder).unwrap();
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(response.ends_with("# TYPE loss gauge\nloss 0.5\n"), "{response}");
    }
}
