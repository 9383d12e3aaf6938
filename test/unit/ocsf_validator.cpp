#include "ocsf_validator.h"

#include <climits>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>

namespace ocsf_test {

using nlohmann::json;

namespace {

// Definitions merge as the schema compiler merges them: objects key by key (so enums gain
// values), anything else replaced by the later definition.
void deep_merge(json& into, const json& from) {
    if (!into.is_object() || !from.is_object()) {
        into = from;
        return;
    }
    for (auto it = from.begin(); it != from.end(); ++it) {
        if (into.contains(it.key()))
            deep_merge(into[it.key()], it.value());
        else
            into[it.key()] = it.value();
    }
}

std::string join(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
}

}  // namespace

Validator::Validator(std::string schema_dir) : dir_(std::move(schema_dir)) {
    dictionary_ = read("dictionary.json");
    categories_ = read("categories.json");
    namespace fs = std::filesystem;
    // Classes by name first, then their uids once each one's category is known.
    std::map<std::string, std::string> class_by_name;
    for (const auto& entry : fs::recursive_directory_iterator(fs::path(dir_) / "events")) {
        if (entry.path().extension() != ".json") continue;
        std::ifstream in(entry.path());
        json def = json::parse(in);
        class_by_name[def.at("name").get<std::string>()] =
            fs::relative(entry.path(), dir_).string();
    }
    for (const auto& [name, file] : class_by_name) {
        std::ifstream in(fs::path(dir_) / file);
        json def = json::parse(in);
        if (!def.contains("uid")) continue;
        // The category: the nearest one along the extends chain.
        json walk = def;
        std::string category;
        for (int depth = 0; depth < 8; ++depth) {
            if (walk.contains("category")) {
                category = walk["category"].get<std::string>();
                break;
            }
            if (!walk.contains("extends")) break;
            std::ifstream parent(fs::path(dir_) / class_by_name.at(walk["extends"].get<std::string>()));
            walk = json::parse(parent);
        }
        const int category_uid = categories_.at("attributes").at(category).at("uid").get<int>();
        class_files_[category_uid * 1000 + def["uid"].get<int>()] = file;
    }
    for (const auto& entry : fs::directory_iterator(fs::path(dir_) / "objects")) {
        if (entry.path().extension() != ".json") continue;
        std::ifstream in(entry.path());
        json def = json::parse(in);
        object_files_[def.at("name").get<std::string>()] =
            fs::relative(entry.path(), dir_).string();
    }
    // Class files are read again when compiled; the scan itself does not count as a need.
    files_read_ = {"dictionary.json", "categories.json"};
}

json Validator::read(const std::string& relative) {
    std::ifstream in(std::filesystem::path(dir_) / relative);
    if (!in) throw std::runtime_error("OCSF schema file missing: " + dir_ + "/" + relative);
    files_read_.insert(relative);
    return json::parse(in);
}

// $include files first (profiles, includes), then the file's own attributes over them.
void Validator::merge_file_attributes(json& into, const json& definition) {
    if (!definition.contains("attributes")) return;
    const json& attributes = definition["attributes"];
    if (attributes.contains("$include")) {
        for (const auto& file : attributes["$include"]) {
            json included = read(file.get<std::string>());
            // A profile's attributes belong to events that declare the profile
            // (metadata.profiles); they are marked with its name.
            if (included.value("meta", "") == "profile" && included.contains("attributes")) {
                for (auto it = included["attributes"].begin(); it != included["attributes"].end(); ++it)
                    if (it.key() != "$include") it.value()["profile"] = included["name"];
            }
            merge_file_attributes(into, included);
        }
    }
    for (auto it = attributes.begin(); it != attributes.end(); ++it) {
        if (it.key() == "$include") continue;
        if (into.contains(it.key()))
            deep_merge(into[it.key()], it.value());
        else
            into[it.key()] = it.value();
    }
}

// Each attribute: the dictionary's definition, with the class's or object's over it.
void Validator::complete(json& attributes) {
    const json& dict = dictionary_.at("attributes");
    for (auto it = attributes.begin(); it != attributes.end(); ++it) {
        if (!dict.contains(it.key()))
            throw std::runtime_error("attribute not in the OCSF dictionary: " + it.key());
        json merged = dict.at(it.key());
        deep_merge(merged, it.value());
        it.value() = merged;
    }
}

const Validator::Compiled& Validator::event_class(int class_uid) {
    auto found = classes_.find(class_uid);
    if (found != classes_.end()) return found->second;
    auto file = class_files_.find(class_uid);
    if (file == class_files_.end())
        throw std::runtime_error("no OCSF class with class_uid " + std::to_string(class_uid));
    // The extends chain, base first.
    std::vector<json> chain;
    chain.push_back(read(file->second));
    while (chain.back().contains("extends")) {
        const std::string parent = chain.back()["extends"].get<std::string>();
        std::string parent_file;
        for (const auto& entry :
             std::filesystem::recursive_directory_iterator(std::filesystem::path(dir_) / "events")) {
            if (entry.path().stem() != parent) continue;
            parent_file = std::filesystem::relative(entry.path(), dir_).string();
        }
        if (parent_file.empty()) throw std::runtime_error("OCSF class not found: " + parent);
        chain.push_back(read(parent_file));
    }
    Compiled c;
    c.attributes = json::object();
    c.constraints = json::object();
    std::string category;
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
        merge_file_attributes(c.attributes, *it);
        if (it->contains("constraints")) c.constraints = (*it)["constraints"];
        if (it->contains("category")) category = (*it)["category"].get<std::string>();
        c.caption = it->value("caption", c.caption);
    }
    complete(c.attributes);
    const json& cat = categories_.at("attributes").at(category);
    c.category_uid = cat.at("uid").get<int>();
    c.category_name = cat.at("caption").get<std::string>();
    c.uid = class_uid;
    return classes_.emplace(class_uid, std::move(c)).first->second;
}

const Validator::Compiled& Validator::object(const std::string& name) {
    auto found = objects_.find(name);
    if (found != objects_.end()) return found->second;
    auto file = object_files_.find(name);
    if (file == object_files_.end()) throw std::runtime_error("no OCSF object named " + name);
    std::vector<json> chain;
    chain.push_back(read(file->second));
    while (chain.back().contains("extends")) {
        const std::string parent = chain.back()["extends"].get<std::string>();
        auto parent_file = object_files_.find(parent);
        if (parent_file == object_files_.end())
            throw std::runtime_error("no OCSF object named " + parent);
        chain.push_back(read(parent_file->second));
    }
    Compiled c;
    c.attributes = json::object();
    c.constraints = json::object();
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
        merge_file_attributes(c.attributes, *it);
        if (it->contains("constraints")) c.constraints = (*it)["constraints"];
        c.caption = it->value("caption", c.caption);
    }
    complete(c.attributes);
    return objects_.emplace(name, std::move(c)).first->second;
}

void Validator::check_scalar(const std::string& type, const json& definition, const json& value,
                             const std::string& path, std::vector<std::string>& problems) {
    if (type == "object") {  // the generic object: any attributes
        if (!value.is_object()) problems.push_back(path + ": not an object");
        return;
    }
    if (type.size() < 2 || type.compare(type.size() - 2, 2, "_t") != 0) {
        check_object(object(type), value, path, problems);
        return;
    }
    // A type and its base types (ip_t -> string_t), each with its own checks.
    const json& types = dictionary_.at("types").at("attributes");
    std::string t = type;
    for (int depth = 0; depth < 4; ++depth) {
        const json& def = types.at(t);
        if (t == "string_t" || def.value("type", "") == "string_t") {
            if (!value.is_string()) {
                problems.push_back(path + ": not a string (" + type + ")");
                return;
            }
            const std::string s = value.get<std::string>();
            if (def.contains("max_len") && s.size() > def["max_len"].get<std::size_t>())
                problems.push_back(path + ": longer than " + def["max_len"].dump() + " (" + t + ")");
            if (def.contains("regex") &&
                !std::regex_search(s, std::regex(def["regex"].get<std::string>())))
                problems.push_back(path + ": \"" + s + "\" does not match " + t + "'s pattern");
        } else if (t == "integer_t") {
            if (!value.is_number_integer() || value.get<long long>() < INT_MIN ||
                value.get<long long>() > INT_MAX)
                problems.push_back(path + ": not a 32-bit integer (" + type + ")");
            else if (def.contains("range") && (value.get<long long>() < def["range"][0].get<long long>() ||
                                               value.get<long long>() > def["range"][1].get<long long>()))
                problems.push_back(path + ": out of range (" + type + ")");
        } else if (t == "long_t") {
            if (!value.is_number_integer()) problems.push_back(path + ": not an integer (" + type + ")");
        } else if (t == "float_t") {
            if (!value.is_number()) problems.push_back(path + ": not a number (" + type + ")");
        } else if (t == "boolean_t") {
            if (!value.is_boolean()) problems.push_back(path + ": not a boolean (" + type + ")");
        } else if (t == "json_t") {
            // anything
        }
        if (!def.contains("type") || t == "string_t") break;
        const std::string base = def["type"].get<std::string>();
        if (base == "string_t") break;  // checked above with the subtype's own rules
        t = base;
    }
    if (definition.contains("enum") && value.is_number_integer()) {
        const std::string key = std::to_string(value.get<long long>());
        if (!definition["enum"].contains(key))
            problems.push_back(path + ": " + key + " is not one of its enum values");
    }
}

void Validator::check_value(const json& definition, const json& value, const std::string& path,
                            std::vector<std::string>& problems) {
    const std::string type = definition.at("type").get<std::string>();
    if (definition.value("is_array", false)) {
        if (!value.is_array()) {
            problems.push_back(path + ": not an array");
            return;
        }
        for (std::size_t i = 0; i < value.size(); ++i)
            check_scalar(type, definition, value[i], path + "[" + std::to_string(i) + "]", problems);
        return;
    }
    check_scalar(type, definition, value, path, problems);
}

void Validator::check_object(const Compiled& type, const json& value, const std::string& path,
                             std::vector<std::string>& problems) {
    std::set<std::string> profiles;
    if (path.empty() && value.is_object() && value.contains("metadata") &&
        value["metadata"].is_object() && value["metadata"].contains("profiles") &&
        value["metadata"]["profiles"].is_array())
        for (const auto& p : value["metadata"]["profiles"])
            if (p.is_string()) profiles.insert(p.get<std::string>());
    if (path.empty()) profiles_ = profiles;
    if (!value.is_object()) {
        problems.push_back((path.empty() ? "event" : path) + ": not an object");
        return;
    }
    static const std::set<std::string> kClassification = {"category_uid", "class_uid", "type_uid"};
    for (auto it = value.begin(); it != value.end(); ++it) {
        const std::string at = join(path, it.key());
        if (!type.attributes.contains(it.key())) {
            problems.push_back(at + ": not an attribute of " + type.caption);
            continue;
        }
        json definition = type.attributes[it.key()];
        // ("profile": null marks an attribute of a profile's object that is not the profile's.)
        if (definition.contains("profile") && definition["profile"].is_string() &&
            !profiles_.count(definition["profile"].get<std::string>())) {
            problems.push_back(at + ": belongs to profile " + definition["profile"].get<std::string>() +
                               ", which metadata.profiles does not declare");
            continue;
        }
        // Checked by the classification arithmetic instead (their dictionary enums list 0 only).
        if (path.empty() && kClassification.count(it.key())) definition.erase("enum");
        check_value(definition, it.value(), at, problems);
    }
    for (auto it = type.attributes.begin(); it != type.attributes.end(); ++it) {
        const bool in_profile = it.value().contains("profile") && it.value()["profile"].is_string() &&
                                !profiles_.count(it.value()["profile"].get<std::string>());
        if (it.value().value("requirement", "") == "required" && !value.contains(it.key()) && !in_profile)
            problems.push_back(join(path, it.key()) + ": required by " + type.caption + " but missing");
        // *_id and its sibling name: the name is the id's caption (Other: any name).
        const json& def = it.value();
        if (def.contains("sibling") && def.contains("enum") && value.contains(it.key()) &&
            value.contains(def["sibling"].get<std::string>()) && value[it.key()].is_number_integer()) {
            const std::string key = std::to_string(value[it.key()].get<long long>());
            const std::string sibling = def["sibling"].get<std::string>();
            if (key != "99" && def["enum"].contains(key) &&
                value[sibling] != def["enum"][key].value("caption", ""))
                problems.push_back(join(path, sibling) + ": " + value[sibling].dump() +
                                   " is not the caption of " + it.key() + " " + key + " (" +
                                   def["enum"][key].value("caption", "") + ")");
        }
    }
    if (type.constraints.contains("at_least_one")) {
        bool any = false;
        for (const auto& name : type.constraints["at_least_one"])
            any = any || value.contains(name.get<std::string>());
        if (!any)
            problems.push_back((path.empty() ? "event" : path) + ": needs at least one of " +
                               type.constraints["at_least_one"].dump());
    }
    if (type.constraints.contains("just_one")) {
        int count = 0;
        for (const auto& name : type.constraints["just_one"])
            count += value.contains(name.get<std::string>()) ? 1 : 0;
        if (count != 1)
            problems.push_back((path.empty() ? "event" : path) + ": needs exactly one of " +
                               type.constraints["just_one"].dump());
    }
}

std::vector<std::string> Validator::validate(const json& event) {
    std::vector<std::string> problems;
    if (!event.is_object() || !event.contains("class_uid") || !event["class_uid"].is_number_integer())
        return {"event: no integer class_uid"};
    const Compiled* c = nullptr;
    try {
        c = &event_class(event["class_uid"].get<int>());
    } catch (const std::exception& e) {
        return {std::string("event: ") + e.what()};
    }
    check_object(*c, event, "", problems);
    auto expect = [&](const char* name, const json& want) {
        if (event.contains(name) && event[name] != want)
            problems.push_back(std::string(name) + ": " + event[name].dump() + ", the class says " +
                               want.dump());
    };
    expect("category_uid", c->category_uid);
    expect("category_name", c->category_name);
    expect("class_name", c->caption);
    if (c->uid / 1000 != c->category_uid) problems.push_back("class_uid: not in its category");
    if (event.contains("activity_id") && event["activity_id"].is_number_integer()) {
        const long long activity = event["activity_id"].get<long long>();
        expect("type_uid", static_cast<long long>(c->uid) * 100 + activity);
        const json& activities = c->attributes.at("activity_id").at("enum");
        const std::string key = std::to_string(activity);
        if (activities.contains(key))
            expect("type_name", c->caption + ": " + activities[key].value("caption", ""));
    }
    return problems;
}

}  // namespace ocsf_test
