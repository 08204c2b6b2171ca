// `sqlx::migrate!` embeds the migrations at compile time but only notices edits
// to files it already knows; a new migration file must rebuild the crate too.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
