//! The page's entry point (trunk builds this binary for wasm32).

#[cfg(target_arch = "wasm32")]
fn main() {
    soft_web::app::start();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!(
        "soft-web is the browser app: build it with `trunk build --release --config trunk.toml` and serve web/dist"
    );
    std::process::exit(2);
}
