//! The clip loaders: DeepMimic quaternion normalisation.

use super::{Clip, Family};
use glam::DVec3;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn assert_near(a: DVec3, b: DVec3, tol: f64, what: &str) {
    assert!((a - b).length() < tol, "{what}: {a} vs {b}");
}

#[test]
fn deepmimic_quaternions_are_normalised_with_one_warning_per_clip() {
    let mut rng = ChaCha8Rng::seed_from_u64(20);
    let clip = Family::Dance.clip(&mut rng, 0.2);
    let mut json: serde_json::Value = serde_json::from_str(&clip.to_deepmimic()).unwrap();
    let frames = json["Frames"].as_array_mut().unwrap();
    // Root rotation (values 4-7) of frame 1 at length 1.057, chest (8-11) of frame 2 at
    // 0.85, neck (12-15) of frame 0 off by less than the tolerance.
    for (f, k, s) in [(1, 4, 1.057), (2, 8, 0.85), (0, 12, 1.0005)] {
        for v in &mut frames[f].as_array_mut().unwrap()[k..k + 4] {
            *v = serde_json::json!(v.as_f64().unwrap() * s);
        }
    }
    let (back, renormalised) = Clip::parse_deepmimic(&json.to_string(), "off.txt").unwrap();
    for (a, b) in clip.poses.iter().zip(&back.poses) {
        for (p, q) in a.points().iter().zip(b.points().iter()) {
            assert_near(*p, *q, 1e-9, "point");
        }
    }
    let warning = renormalised.warning("off.txt").unwrap();
    assert!(
        warning.contains("off.txt: normalised 2 quaternions") && warning.contains("0.8500"),
        "{warning}"
    );
    let (_, clean) = Clip::parse_deepmimic(&clip.to_deepmimic(), "clean.txt").unwrap();
    assert!(clean.warning("clean.txt").is_none());

    frames_edit(&mut json, 2, 12, [0.0; 4]);
    let err = Clip::from_deepmimic(&json.to_string(), "zero.txt")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("zero.txt: frame 2, values 12-15")
            && err.contains("(0, 0, 0, 0) has length 0"),
        "{err}"
    );
    frames_edit(&mut json, 2, 12, [1e300; 4]);
    let err = Clip::from_deepmimic(&json.to_string(), "huge.txt")
        .unwrap_err()
        .to_string();
    assert!(err.contains("has length inf"), "{err}");
}

fn frames_edit(json: &mut serde_json::Value, frame: usize, k: usize, q: [f64; 4]) {
    for (v, x) in json["Frames"][frame].as_array_mut().unwrap()[k..k + 4]
        .iter_mut()
        .zip(q)
    {
        *v = serde_json::json!(x);
    }
}
