import factory

from accounts.models import EngineerProfile, Membership, Organization, User


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.test")
    name = factory.Faker("name")
    account_type = User.AccountType.COMPANY
    password = factory.PostGenerationMethodCall("set_password", "correct horse battery")

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class EngineerFactory(UserFactory):
    account_type = User.AccountType.ENGINEER
    profile = factory.RelatedFactory("tests.factories.accounts.EngineerProfileFactory", factory_related_name="user")


class EngineerProfileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = EngineerProfile

    headline = "Kernel tuner"
    skills = ["cuda", "triton"]


class StaffFactory(UserFactory):
    account_type = User.AccountType.OPERATOR
    is_staff = True
    is_superuser = True


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    name = factory.Sequence(lambda n: f"Company {n}")
    slug = factory.Sequence(lambda n: f"company-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    organization = factory.SubFactory(OrganizationFactory)
    user = factory.SubFactory(UserFactory)
    role = Membership.Role.MEMBER


def CompanyAdminFactory(organization=None, role=Membership.Role.ADMIN, **kwargs) -> User:
    user = UserFactory(**kwargs)
    MembershipFactory(organization=organization or OrganizationFactory(), user=user, role=role)
    return user


def CompanyMemberFactory(organization=None, **kwargs) -> User:
    return CompanyAdminFactory(organization=organization, role=Membership.Role.MEMBER, **kwargs)
