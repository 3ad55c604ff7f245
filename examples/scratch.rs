fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opts = credtrail::ingest::IngestOptions {
        inputs: args[2..].iter().map(Into::into).collect(),
        lake: args[1].clone().into(),
        ..Default::default()
    };
    let s = credtrail::ingest::ingest(&opts).unwrap();
    println!("{}", serde_json::to_string_pretty(&s).unwrap());
}
