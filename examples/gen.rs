fn main() {
    let o = credtrail::sample::SampleOptions { days: 5, credentials: 30, seed: 3, rate_scale: 0.4, ..Default::default() };
    let s = credtrail::sample::generate(&o, std::path::Path::new("/tmp/scr/s3")).unwrap();
    println!("{}", serde_json::to_string(&s).unwrap());
}
