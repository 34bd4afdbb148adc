//! Apache httpd error pages: UFM sits behind Apache, so 401, 403, 404 and 5xx answers that do not
//! come from UFM itself are HTML, not JSON. Clients that string-match them must keep working.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

// Titles follow Apache's status lines (clients match on them); the paragraphs are our own words.
fn text(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        400 => ("Bad Request", "The server could not understand this request."),
        401 => ("Unauthorized", "The credentials sent with this request were missing or not accepted."),
        403 => ("Forbidden", "The authenticated user may not access this resource."),
        404 => ("Not Found", "No resource exists at the requested URL."),
        405 => ("Method Not Allowed", "This URL does not accept the request method."),
        502 => ("Bad Gateway", "The proxy got an invalid answer from the UFM server behind it."),
        503 => ("Service Temporarily Unavailable", "The service cannot handle the request right now. Try again later."),
        504 => ("Gateway Timeout", "The proxy did not get an answer from the UFM server in time."),
        _ => ("Internal Server Error", "The server failed while handling the request."),
    }
}

/// The HTML body Apache sends for `status`.
pub fn body(status: StatusCode) -> String {
    let (title, para) = text(status);
    let code = status.as_u16();
    let title = if code == 500 || matches!(code, 400..=405 | 502..=504) {
        title.to_string()
    } else {
        status.canonical_reason().map_or_else(|| title.to_string(), str::to_string)
    };
    format!(
        "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n\
         <title>{code} {title}</title>\n</head><body>\n<h1>{title}</h1>\n<p>{para}</p>\n\
         </body></html>\n"
    )
}

/// A complete Apache-style error response (`WWW-Authenticate` included for 401).
pub fn response(status: StatusCode) -> Response {
    let mut resp = Response::new(Body::from(body(status)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=iso-8859-1"));
    h.insert(header::SERVER, HeaderValue::from_static("Apache"));
    if status == StatusCode::UNAUTHORIZED {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"UFM Server\""));
    }
    resp
}

/// [`response`] for a raw status code (invalid codes become 500).
pub fn response_for(code: u16) -> Response {
    response(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_carry_the_status_line_clients_match_on() {
        assert!(body(StatusCode::UNAUTHORIZED).contains("<title>401 Unauthorized</title>"));
        assert!(body(StatusCode::SERVICE_UNAVAILABLE).contains("<title>503 Service Temporarily Unavailable</title>"));
        assert!(body(StatusCode::FORBIDDEN).contains("<h1>Forbidden</h1>"));
        assert!(body(StatusCode::IM_A_TEAPOT).contains("418 I'm a teapot"));
    }

    #[test]
    fn unauthorized_asks_for_basic_auth() {
        let r = response(StatusCode::UNAUTHORIZED);
        assert!(r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap().starts_with("Basic"));
        assert_eq!(response_for(1000).status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
