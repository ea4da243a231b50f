//! A schema registry stand-in on 127.0.0.1 for the suites that need a broken registry: it answers
//! every request the way the test says (404, 500, 401, a 200 whose body is no schema) or forwards
//! it to the real registry, and the test can change its answer while a consumer runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::schema_registry_url;

/// How the stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 404 with the registry's "not found" body, as an empty or wrong registry answers.
    NotFound,
    /// 500, as a registry whose storage is broken answers.
    ServerError,
    /// 401, as a registry that refuses the credentials answers.
    Unauthorized,
    /// 200 with an HTML page, as a wrong URL behind a web server answers.
    Garbage,
    /// What the real registry answers.
    Forward,
}

pub struct RegistryStandIn {
    pub addr: std::net::SocketAddr,
    answer: Arc<Mutex<Answer>>,
    requests: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl RegistryStandIn {
    pub async fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the stand-in");
        let addr = listener.local_addr().expect("local address");
        let answer = Arc::new(Mutex::new(answer));
        let requests = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(serve(listener, answer.clone(), requests.clone()));
        Self { addr, answer, requests, task }
    }

    /// The base URL to configure, with the same path as the real registry's.
    pub fn url(&self) -> String {
        let real = schema_registry_url();
        let path = real.splitn(4, '/').nth(3).unwrap_or_default();
        format!("http://{}/{path}", self.addr)
    }

    pub fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for RegistryStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, answer: Arc<Mutex<Answer>>, requests: Arc<AtomicU64>) {
    while let Ok((stream, _)) = listener.accept().await {
        let (answer, requests) = (answer.clone(), requests.clone());
        tokio::spawn(async move {
            let _ = respond(stream, answer, requests).await;
        });
    }
}

/// One request per connection (`Connection: close`): enough for a client that reconnects.
async fn respond(mut stream: TcpStream, answer: Arc<Mutex<Answer>>, requests: Arc<AtomicU64>) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buffer).await?;
        if n == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buffer[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let answer = *answer.lock().unwrap();
    let (status, content_type, body) = match answer {
        Answer::NotFound => (404, "application/json", r#"{"error_code":40403,"message":"Schema not found"}"#.to_owned()),
        Answer::ServerError => (500, "application/json", r#"{"error_code":50001,"message":"Error in the backend data store"}"#.to_owned()),
        Answer::Unauthorized => (401, "application/json", r#"{"error_code":401,"message":"Unauthorized"}"#.to_owned()),
        Answer::Garbage => (200, "text/html", "<html><body>It works!</body></html>".to_owned()),
        Answer::Forward => forward(&path).await,
    };
    requests.fetch_add(1, Ordering::SeqCst);
    let reply =
        format!("HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

async fn forward(path: &str) -> (u16, &'static str, String) {
    let real = schema_registry_url();
    let origin: String = real.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    match reqwest::get(format!("{origin}{path}")).await {
        Ok(response) => (response.status().as_u16(), "application/json", response.text().await.unwrap_or_default()),
        Err(_) => (502, "application/json", r#"{"error_code":502,"message":"the real registry did not answer"}"#.to_owned()),
    }
}
