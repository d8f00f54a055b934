//! Debian's nginx as a reverse proxy in front of a backend the test owns, passing the client on
//! in `X-Forwarded-For` the way most deployments configure it.

use super::Server;
use crate::{TempDir, free_port};

impl Server {
    /// nginx on 127.0.0.1 proxying every path to `127.0.0.1:backend_port`, appending the peer
    /// to `X-Forwarded-For` (`$proxy_add_x_forwarded_for`). Its upstream connections come from
    /// 127.0.0.1.
    pub fn nginx_proxy(backend_port: u16) -> Self {
        let dir = TempDir::new("nginx-proxy");
        let port = free_port();
        let d = dir.path.display();
        let conf = format!(
            "daemon off; master_process on; worker_processes 1; pid {d}/nginx.pid;\n\
             error_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off;\n\
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               server {{ listen 127.0.0.1:{port};\n\
                 location / {{\n\
                   proxy_pass http://127.0.0.1:{backend_port};\n\
                   proxy_set_header Host $host;\n\
                   proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
                 }}\n\
               }}\n\
             }}\n"
        );
        Self::start_nginx(dir, &conf, port, "nginx proxy", false)
    }
}
