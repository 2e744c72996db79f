//! The clip loaders: DeepMimic quaternion normalisation, BVH export and retargeting
//! against forward kinematics, error messages, and damaged files (errors, never panics).

use super::{Clip, Family};
use crate::motion::body::{self, Body, N_POINTS};
use crate::motion::task::Source;
use glam::{DQuat, DVec3};
use rand::{Rng, SeedableRng};
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

#[test]
fn bvh_export_loads_back_onto_the_same_points() {
    let dir = std::env::temp_dir().join(format!("optimus-bvh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for family in Family::ALL {
        let clip = family.clip(&mut rng, 0.5);
        let path = dir.join(format!("{}.BVH", family.name()));
        std::fs::write(&path, clip.to_bvh()).unwrap();
        // Centimetres, found from the leg length; the same with the scale given.
        let back = Clip::load(&path).unwrap();
        let given = Clip::from_bvh(&clip.to_bvh(), "given.bvh", Some(0.01)).unwrap();
        // Keywords in lower case read the same.
        let lower = [
            "HIERARCHY",
            "ROOT",
            "OFFSET",
            "CHANNELS",
            "JOINT",
            "End Site",
            "MOTION",
            "Frames:",
            "Frame Time:",
        ]
        .iter()
        .fold(clip.to_bvh(), |t, k| t.replace(k, &k.to_lowercase()));
        assert!(lower.contains("end site") && !lower.contains("OFFSET"));
        let lowered = Clip::from_bvh(&lower, "lower.bvh", Some(0.01)).unwrap();
        assert_eq!(lowered.poses.len(), given.poses.len());
        for (a, b) in lowered.poses.iter().zip(&given.poses) {
            for (p, q) in a.points().iter().zip(b.points().iter()) {
                assert_near(*p, *q, 1e-12, "lower-case keywords");
            }
        }
        assert_eq!(back.name, family.name());
        assert_eq!(back.poses.len(), clip.poses.len());
        assert!((back.duration() - clip.duration()).abs() < 1e-6);
        for (f, ((a, b), c)) in clip
            .poses
            .iter()
            .zip(&back.poses)
            .zip(&given.poses)
            .enumerate()
        {
            let (pa, pb, pc) = (a.points(), b.points(), c.points());
            for i in 0..N_POINTS {
                let what = format!("{} frame {f} point {i}", family.name());
                assert_near(pa[i], pb[i], 1e-6, &what);
                assert_near(pa[i], pc[i], 1e-6, &what);
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// (name, parent, offset, channels) of a CMU-style skeleton: a T-pose facing +z with
/// its left on +x, in CMU's units (legs 14.5 long), hip joints under an intermediate
/// joint, a three-joint spine, collarbones, toes with End Sites, and assorted channel
/// orders and subsets.
fn cmu_style_joints() -> Vec<(String, Option<usize>, DVec3, &'static str)> {
    let zyx = "Zrotation Yrotation Xrotation";
    let v = DVec3::new;
    let mut j: Vec<(String, Option<usize>, DVec3, &'static str)> = vec![(
        "Hips".into(),
        None,
        DVec3::ZERO,
        "Xposition Yposition Zposition Zrotation Yrotation Xrotation",
    )];
    let mut add = |name: String, parent: usize, offset: DVec3, channels: &'static str| {
        j.push((name, Some(parent), offset, channels));
        j.len() - 1
    };
    for (side, x) in [("Left", 1.0), ("Right", -1.0)] {
        let s = side.chars().next().unwrap();
        let root = add(format!("{s}HipJoint"), 0, DVec3::ZERO, zyx);
        let up = add(format!("{side}UpLeg"), root, v(1.8 * x, -1.7, 0.0), zyx);
        let leg = add(format!("{side}Leg"), up, v(0.0, -7.4, 0.0), "Xrotation");
        let foot = add(
            format!("{side}Foot"),
            leg,
            v(0.0, -7.1, 0.0),
            "Xrotation Yrotation Zrotation",
        );
        let toe = add(format!("{side}ToeBase"), foot, v(0.0, -0.9, 2.6), "");
        add("End Site".into(), toe, v(0.0, 0.0, 1.0), "");
    }
    let lower = add("LowerBack".into(), 0, DVec3::ZERO, zyx);
    let spine = add("Spine".into(), lower, v(0.0, 2.2, 0.0), zyx);
    let spine1 = add("Spine1".into(), spine, v(0.0, 2.2, 0.0), zyx);
    let neck = add("Neck".into(), spine1, DVec3::ZERO, zyx);
    let neck1 = add("Neck1".into(), neck, v(0.0, 1.4, 0.0), zyx);
    let head = add("Head".into(), neck1, v(0.0, 1.5, 0.0), zyx);
    add("End Site".into(), head, v(0.0, 1.5, 0.0), "");
    for (side, x) in [("Left", 1.0), ("Right", -1.0)] {
        let collar = add(format!("{side}Shoulder"), spine1, DVec3::ZERO, zyx);
        let arm = add(format!("{side}Arm"), collar, v(3.3 * x, 0.9, 0.0), zyx);
        let fore = add(
            format!("{side}ForeArm"),
            arm,
            v(5.0 * x, 0.0, 0.0),
            "Yrotation",
        );
        let hand = add(format!("{side}Hand"), fore, v(3.4 * x, 0.0, 0.0), zyx);
        add("End Site".into(), hand, v(x, 0.0, 0.0), "");
    }
    j
}

/// BVH text of `joints` with each frame given as (joint name, channel values) for the
/// joints that move; every other channel is zero.
fn bvh_text(
    joints: &[(String, Option<usize>, DVec3, &'static str)],
    frames: &[Vec<(&str, Vec<f64>)>],
) -> String {
    fn write(
        joints: &[(String, Option<usize>, DVec3, &'static str)],
        j: usize,
        out: &mut String,
        order: &mut Vec<usize>,
    ) {
        let (name, parent, o, channels) = &joints[j];
        let head = match parent {
            None => format!("ROOT {name}"),
            Some(_) if name == "End Site" => name.clone(),
            Some(_) => format!("JOINT {name}"),
        };
        out.push_str(&format!("{head}\n{{\n\tOFFSET {} {} {}\n", o.x, o.y, o.z));
        if name != "End Site" {
            let n = channels.split_whitespace().count();
            out.push_str(&format!("\tCHANNELS {n} {channels}\n"));
        }
        order.push(j);
        for c in (0..joints.len()).filter(|&c| joints[c].1 == Some(j)) {
            write(joints, c, out, order);
        }
        out.push_str("}\n");
    }
    let mut out = String::from("HIERARCHY\n");
    let mut order = Vec::new();
    write(joints, 0, &mut out, &mut order);
    out.push_str(&format!(
        "MOTION\nFrames: {}\nFrame Time: 0.0083333\n",
        frames.len()
    ));
    for frame in frames {
        let mut row = Vec::new();
        for &j in &order {
            let n = joints[j].3.split_whitespace().count();
            match frame.iter().find(|(name, _)| *name == joints[j].0) {
                Some((_, values)) => row.extend(values.iter().map(|v| v.to_string())),
                None => row.extend(std::iter::repeat_n("0".to_string(), n)),
            }
        }
        out.push_str(&row.join(" "));
        out.push('\n');
    }
    out
}

#[test]
fn a_cmu_style_t_pose_skeleton_is_retargeted_by_bone_directions() {
    let joints = cmu_style_joints();
    // Frame 0: the T-pose. Frame 1: moved 20 units forward, turned 90° about y (root
    // channels Z Y X), arms hanging, left knee bent 60°, left elbow bent 90° forward.
    let frames = vec![
        vec![("Hips", vec![10.0, 17.1, 5.0, 0.0, 0.0, 0.0])],
        vec![
            ("Hips", vec![10.0, 14.1, 25.0, 0.0, 90.0, 0.0]),
            ("LeftArm", vec![-90.0, 0.0, 0.0]),
            ("RightArm", vec![90.0, 0.0, 0.0]),
            ("LeftLeg", vec![60.0]),
            ("LeftForeArm", vec![-90.0]),
        ],
    ];
    let text = bvh_text(&joints, &frames);
    let clip = Clip::from_bvh(&text, "cmu.bvh", None).unwrap();
    let scale = -(body::THIGH_OFFSET.y + body::SHIN_OFFSET.y) / 14.5;
    let [p0, p1] = [0, 1].map(|f| clip.poses[f].points());
    let (x, y, z) = (DVec3::X, DVec3::Y, DVec3::Z);
    // Body point indices of body::POINTS.
    let pt = |n: &str| body::POINTS.iter().position(|p| *p == n).unwrap();
    let (chest, neck, head) = (pt("chest"), pt("neck"), pt("head"));
    let (r_sh, r_el, r_wr) = (pt("right_shoulder"), pt("right_elbow"), pt("right_wrist"));
    let (l_sh, l_el, l_wr) = (pt("left_shoulder"), pt("left_elbow"), pt("left_wrist"));
    let (r_hip, r_knee) = (pt("right_hip"), pt("right_knee"));
    let (l_hip, l_knee, l_ankle, l_toe) = (
        pt("left_hip"),
        pt("left_knee"),
        pt("left_ankle"),
        pt("left_toe"),
    );
    let dir = |p: &[DVec3; N_POINTS], a: usize, b: usize| (p[b] - p[a]).normalize();
    let tol = 1e-9;
    // The rest pose faces +x (BVH +z), left on −z (BVH +x): arms straight out sideways,
    // legs straight down, the spine and the head up, the feet as the BVH's.
    assert_near(dir(&p0, l_sh, l_el), -z, tol, "left upper arm");
    assert_near(dir(&p0, l_el, l_wr), -z, tol, "left forearm");
    assert_near(dir(&p0, r_sh, r_el), z, tol, "right upper arm");
    assert_near(dir(&p0, r_hip, r_knee), -y, tol, "right thigh");
    assert_near(dir(&p0, l_knee, l_ankle), -y, tol, "left shin");
    assert_near(dir(&p0, chest, neck), y, tol, "spine");
    assert_near(dir(&p0, neck, head), y, tol, "neck");
    assert_near(
        dir(&p0, l_ankle, l_toe),
        DVec3::new(2.6, -0.9, 0.0).normalize(),
        tol,
        "left foot",
    );
    assert!(p0.iter().chain(&p1).all(|p| p.y > -1e-9), "grounded");
    // Frame 1: facing −z; the root moved by the aligned, scaled displacement.
    assert_near(clip.poses[1].root_rot * x, -z, tol, "heading");
    assert_near(
        clip.poses[1].root - clip.poses[0].root,
        DVec3::new(20.0, -3.0, 0.0) * scale,
        1e-9,
        "root",
    );
    assert_near(dir(&p1, l_sh, l_el), -y, tol, "left arm down");
    assert_near(dir(&p1, r_sh, r_el), -y, tol, "right arm down");
    assert_near(dir(&p1, r_el, r_wr), -y, tol, "right forearm down");
    assert_near(dir(&p1, l_el, l_wr), -z, tol, "left forearm forward");
    let shin = DVec3::new(0.0, -0.5, 0.75f64.sqrt());
    assert_near(dir(&p1, l_knee, l_ankle), shin, tol, "left shin bent back");
    assert_near(dir(&p1, l_hip, l_knee), -y, tol, "left thigh");
    let angle = |n: &str| {
        let j = body::JOINTS.iter().position(|j| *j == n).unwrap();
        super::hinge_angle(clip.poses[1].joints[j]).abs()
    };
    assert!(
        (angle("left_knee") - std::f64::consts::FRAC_PI_3).abs() < tol,
        "left knee"
    );
    assert!(
        (angle("left_elbow") - std::f64::consts::FRAC_PI_2).abs() < tol,
        "left elbow"
    );

    // A Z-up copy of the file (the world turned by 90° about x: y to z, z to −y) gives
    // the same engine clip.
    let z_up_channel = |c: &str| match c.split_at(1) {
        ("Y", rest) => (format!("Z{rest}"), 1.0),
        ("Z", rest) => (format!("Y{rest}"), -1.0),
        _ => (c.to_string(), 1.0),
    };
    let z_up: Vec<_> = joints
        .iter()
        .map(|(name, parent, o, channels)| {
            let channels: Vec<String> = channels
                .split_whitespace()
                .map(|c| z_up_channel(c).0)
                .collect();
            let channels: &'static str = channels.join(" ").leak();
            (name.clone(), *parent, DVec3::new(o.x, -o.z, o.y), channels)
        })
        .collect();
    let z_up_frames: Vec<Vec<(&str, Vec<f64>)>> = frames
        .iter()
        .map(|f| {
            f.iter()
                .map(|(name, values)| {
                    let channels = joints.iter().find(|j| j.0 == *name).unwrap().3;
                    let signs = channels.split_whitespace().map(|c| z_up_channel(c).1);
                    (
                        *name,
                        values.iter().zip(signs).map(|(v, s)| v * s).collect(),
                    )
                })
                .collect()
        })
        .collect();
    let turned = Clip::from_bvh(&bvh_text(&z_up, &z_up_frames), "z-up.bvh", None).unwrap();
    for (a, b) in clip.poses.iter().zip(&turned.poses) {
        for (p, q) in a.points().iter().zip(b.points().iter()) {
            assert_near(*p, *q, 1e-9, "Z-up point");
        }
    }
}

/// World positions of `joints` in a frame given as in [`bvh_text`]: BVH forward
/// kinematics written out for the test (rotation channels compose in their order).
fn forward_kinematics(
    joints: &[(String, Option<usize>, DVec3, &'static str)],
    frame: &[(&str, Vec<f64>)],
) -> Vec<DVec3> {
    let mut pos: Vec<DVec3> = Vec::new();
    let mut rot: Vec<DQuat> = Vec::new();
    for (name, parent, offset, channels) in joints {
        let values = frame
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice());
        let (mut t, mut r) = (*offset, DQuat::IDENTITY);
        for (c, v) in channels.split_whitespace().zip(values.unwrap_or(&[])) {
            let a = v.to_radians();
            match c {
                "Xposition" => t.x = *v,
                "Yposition" => t.y = *v,
                "Zposition" => t.z = *v,
                "Xrotation" => r *= DQuat::from_rotation_x(a),
                "Yrotation" => r *= DQuat::from_rotation_y(a),
                _ => r *= DQuat::from_rotation_z(a),
            }
        }
        let (pp, pr) = parent.map_or((DVec3::ZERO, DQuat::IDENTITY), |p| (pos[p], rot[p]));
        pos.push(pp + pr * t);
        rot.push(pr * r);
    }
    pos
}

#[test]
fn random_cmu_style_poses_keep_the_bvh_bone_directions() {
    // Knees and elbows also turn about the bone above them first, so they bend in any
    // plane: the engine's hinges must twist the thigh and upper arm to follow.
    let mut joints = cmu_style_joints();
    for j in &mut joints {
        match j.0.as_str() {
            "LeftLeg" | "RightLeg" => j.3 = "Yrotation Xrotation",
            "LeftForeArm" | "RightForeArm" => j.3 = "Xrotation Yrotation",
            _ => {}
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(24);
    let mut deg = |lo: f64, hi: f64| rng.random_range(lo..hi);
    let frames: Vec<Vec<(&str, Vec<f64>)>> = (0..30)
        .map(|_| {
            joints
                .iter()
                .filter(|j| !j.3.is_empty())
                .map(|(name, _, _, channels)| {
                    let values = match name.as_str() {
                        "Hips" => vec![
                            deg(-50.0, 50.0),
                            deg(15.0, 18.0),
                            deg(-50.0, 50.0),
                            deg(-20.0, 20.0),
                            deg(-180.0, 180.0),
                            deg(-20.0, 20.0),
                        ],
                        "LeftLeg" | "RightLeg" => vec![deg(-90.0, 90.0), deg(0.0, 120.0)],
                        "LeftForeArm" | "RightForeArm" => {
                            vec![deg(-90.0, 90.0), deg(-120.0, 120.0)]
                        }
                        _ => channels
                            .split_whitespace()
                            .map(|_| deg(-40.0, 40.0))
                            .collect(),
                    };
                    (name.as_str(), values)
                })
                .collect()
        })
        .collect();
    let clip = Clip::from_bvh(&bvh_text(&joints, &frames), "random.bvh", None).unwrap();
    let at = |n: &str| joints.iter().position(|j| j.0 == n).unwrap();
    // The file faces +z with its left on +x: the engine's world is it turned 90° about y.
    let align = DQuat::from_rotation_y(std::f64::consts::FRAC_PI_2);
    let scale = -(body::THIGH_OFFSET.y + body::SHIN_OFFSET.y) / 14.5;
    let hip_mid = |b: &[DVec3]| 0.5 * (b[at("LeftUpLeg")] + b[at("RightUpLeg")]);
    let first = forward_kinematics(&joints, &frames[0]);
    let mut bent = [0, 0];
    for (f, frame) in frames.iter().enumerate() {
        let b = forward_kinematics(&joints, frame);
        let p = clip.poses[f].points();
        let bvh_dir = |from: &str, to: &str| (align * (b[at(to)] - b[at(from)])).normalize();
        let dir = |from: usize, to: usize| (p[to] - p[from]).normalize();
        let moved = clip.poses[f].root - clip.poses[0].root;
        assert_near(
            moved,
            align * (hip_mid(&b) - hip_mid(&first)) * scale,
            1e-9,
            "root",
        );
        assert_near(
            dir(14, 9),
            bvh_dir("LeftUpLeg", "RightUpLeg"),
            1e-9,
            "hip line",
        );
        assert_near(dir(1, 2), bvh_dir("Neck", "Head"), 1e-9, "neck");
        // Per side: the body points of hip, knee, ankle, toe, shoulder, elbow, wrist.
        for (side, [hip, knee, ankle, toe, sh, el, wr]) in [
            ("Right", [9, 10, 11, 12, 3, 4, 5]),
            ("Left", [14, 15, 16, 17, 6, 7, 8]),
        ] {
            let j = |part: &str| format!("{side}{part}");
            let what = |part: &str| format!("frame {f} {side} {part}");
            let thigh = bvh_dir(&j("UpLeg"), &j("Leg"));
            assert_near(dir(hip, knee), thigh, 1e-9, &what("thigh"));
            assert_near(
                dir(ankle, toe),
                bvh_dir(&j("Foot"), &j("ToeBase")),
                1e-9,
                &what("foot"),
            );
            let arm = bvh_dir(&j("Arm"), &j("ForeArm"));
            assert_near(dir(sh, el), arm, 1e-9, &what("upper arm"));
            // Shin and forearm: exact once the limb bends by 20°, and off by less than
            // twice the bend below (the hinge plane is not forced there).
            for (k, (upper, lower, mid, end)) in [
                (thigh, bvh_dir(&j("Leg"), &j("Foot")), knee, ankle),
                (arm, bvh_dir(&j("ForeArm"), &j("Hand")), el, wr),
            ]
            .into_iter()
            .enumerate()
            {
                let bend = upper.angle_between(lower);
                let err = dir(mid, end).angle_between(lower);
                if bend >= 20f64.to_radians() {
                    bent[k] += 1;
                    assert!(err < 1e-7, "{}: {err}", what("shin or forearm"));
                } else {
                    assert!(
                        err <= 2.0 * bend + 1e-7,
                        "{}: {err}",
                        what("shin or forearm")
                    );
                }
            }
        }
    }
    assert!(bent[0] > 20 && bent[1] > 20, "bent limbs: {bent:?}");
}

#[test]
fn bvh_errors_name_the_file_the_line_and_the_fix() {
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    let good = Family::Walk.clip(&mut rng, 0.2).to_bvh();
    let line_of = |needle: &str| good.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let cases: Vec<(String, String)> = vec![
        (
            good.replacen("OFFSET 0.000000 -42.154600 0.000000", "", 1),
            format!("line {}: RightLeg has no OFFSET", line_of("JOINT RightLeg")),
        ),
        (
            good.replacen("1 Zrotation", "1 Zrot", 1),
            format!("line {}: unknown channel 'Zrot'", line_of("1 Zrotation")),
        ),
        (
            good.replacen("Frames: 7", "Frames: 8", 1),
            format!("line {}: 'Frames: 8', but 7 rows", line_of("Frames:")),
        ),
        (
            good.replacen("JOINT LeftLeg", "JOINT LeftShin2", 1),
            "no joint for the left knee: looked for LeftLeg".to_string(),
        ),
        (
            good.replacen("Frame Time: 0.0", "Frame Time: -0.0", 1),
            "the frame time must be positive".to_string(),
        ),
        (
            good.replacen("MOTION", "MOTON", 1),
            "no MOTION line".to_string(),
        ),
        (
            good.replacen("End Site\n      {\n", "End Site\n      {\n CHANNELS 0\n", 1),
            "CHANNELS in an End Site".to_string(),
        ),
    ];
    // The last row with a non-number in it, and one value short.
    let (rows, last) = good.trim_end().rsplit_once('\n').unwrap();
    let line = rows.lines().count() + 1;
    let n = last.split_whitespace().count();
    let mut cases = cases;
    cases.push((
        format!("{rows}\n{}", last.replacen(' ', " x1 ", 1)),
        format!("line {line}: 'x1' is not a finite number"),
    ));
    cases.push((
        format!("{rows}\n{}", last.rsplit_once(' ').unwrap().0),
        format!(
            "line {line}: frame 6 has {} values; the HIERARCHY declares {n} channels",
            n - 1
        ),
    ));
    for (text, want) in cases {
        let err = Clip::from_bvh(&text, "bad.bvh", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("motion clip bad.bvh") && err.contains(&want),
            "{err}\nwanted: {want}"
        );
    }
}

/// `good` damaged in one of four ways: arbitrary bytes, a truncation, byte edits, or
/// numbers replaced by extreme ones; and whether the damage must be an error (a
/// truncation before `must_fail_before`).
fn damage(rng: &mut ChaCha8Rng, good: &str, must_fail_before: usize) -> (String, bool) {
    const BYTES: &[u8] = b"0123456789-+.eE{}[]:,\" \n\tabcNnaIifxyz";
    let mut bytes = good.as_bytes().to_vec();
    match rng.random_range(0..4) {
        0 => {
            let n = rng.random_range(0..300);
            let text: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            return (String::from_utf8_lossy(&text).into_owned(), false);
        }
        1 => {
            let cut = rng.random_range(0..bytes.len());
            bytes.truncate(cut);
            return (
                String::from_utf8_lossy(&bytes).into_owned(),
                cut < must_fail_before,
            );
        }
        2 => {
            for _ in 0..rng.random_range(1..6) {
                let at = rng.random_range(0..bytes.len());
                match rng.random_range(0..3) {
                    0 => bytes[at] = BYTES[rng.random_range(0..BYTES.len())],
                    1 => {
                        bytes.remove(at);
                    }
                    _ => {
                        let end = (at + rng.random_range(1..40)).min(bytes.len());
                        let chunk = bytes[at..end].to_vec();
                        let to = rng.random_range(0..bytes.len());
                        bytes.splice(to..to, chunk);
                    }
                }
            }
        }
        _ => {
            const EXTREME: [&str; 9] = [
                "1e308",
                "-1e308",
                "NaN",
                "inf",
                "0",
                "1e-320",
                "1e30",
                "-0",
                "99999999999999999999",
            ];
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let words: Vec<&str> = text.split(' ').collect();
            let mut out = Vec::with_capacity(words.len());
            for w in words {
                let numeric = w
                    .trim_matches(|c: char| !c.is_ascii_digit())
                    .parse::<f64>()
                    .is_ok();
                if numeric && rng.random_bool(0.05) {
                    out.push(EXTREME[rng.random_range(0..EXTREME.len())].to_string());
                } else {
                    out.push(w.to_string());
                }
            }
            return (out.join(" "), false);
        }
    }
    (String::from_utf8_lossy(&bytes).into_owned(), false)
}

#[test]
fn damaged_clip_files_give_errors_not_panics() {
    let cfg = crate::motion::tests::small_task();
    let body = Body::new(&cfg.gains);
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let clip = Family::Walk.clip(&mut rng, 0.2);
    let bvh = clip.to_bvh();
    let json = clip.to_deepmimic();
    // A BVH cut before its last row lacks frames; JSON cut anywhere is not JSON.
    let bvh_rows = bvh.trim_end().rfind('\n').unwrap();
    let json_end = json.trim_end().len();
    type Loader = fn(&str) -> crate::error::Result<Clip>;
    let loaders: [(&str, &str, usize, Loader); 2] = [
        ("BVH", &bvh, bvh_rows, |t| {
            Clip::from_bvh(t, "fuzz.bvh", None)
        }),
        ("DeepMimic", &json, json_end, |t| {
            Clip::from_deepmimic(t, "fuzz.json")
        }),
    ];
    let (mut accepted, mut refused) = (0, 0);
    for (format, good, must_fail_before, load) in loaders {
        assert!(load(good).is_ok());
        for case in 0..4000 {
            let (text, must_fail) = damage(&mut rng, good, must_fail_before);
            let result = std::panic::catch_unwind(|| load(&text)).unwrap_or_else(|_| {
                panic!("the {format} loader panicked on damaged file {case}:\n{text}")
            });
            match result {
                Ok(clip) => {
                    assert!(
                        !must_fail,
                        "{format} case {case} accepted a truncation:\n{text}"
                    );
                    assert!(clip.poses.len() >= 2 && clip.duration().is_finite());
                    for p in &clip.poses {
                        assert!(
                            p.points().iter().all(|x| x.is_finite()),
                            "{format} case {case}"
                        );
                    }
                    // What a loader accepts, the task can cut windows from or refuse.
                    let _ = Source::Clip(clip).window(&body, &cfg, case);
                    accepted += 1;
                }
                Err(e) => {
                    let e = e.to_string();
                    assert!(e.contains("motion clip fuzz."), "{format} case {case}: {e}");
                    refused += 1;
                }
            }
        }
    }
    assert!(
        accepted > 100 && refused > 1000,
        "{accepted} accepted, {refused} refused"
    );
}
