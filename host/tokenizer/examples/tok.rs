//! Prints the token ids of each argument, as `/tokenize` would with parse_special true.
//! Usage: cargo run -p discedge-tokenizer --example tok -- MODEL.gguf TEXT...
fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: tok MODEL.gguf TEXT...");
    let t = discedge_tokenizer::Tokenizer::from_gguf(&path).unwrap_or_else(|e| panic!("{e}"));
    for text in args {
        println!("{:?}", t.tokenize(&text, true));
    }
}
